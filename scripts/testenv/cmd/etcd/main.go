// Command etcd is etcd's own server main at the version k8s.io/apiserver pins,
// so the test control plane runs the etcd that Kubernetes release is tested with.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
