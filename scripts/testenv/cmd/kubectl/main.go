// Command kubectl is upstream's kubectl main, rebuilt from the Go module proxy so the
// manifest tests (kustomize rendering, server-side dry-run) use a client of the same version as
// the test API server instead of whatever kubectl the machine has.
package main

import (
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	command := cmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		util.CheckErr(err)
	}
}
