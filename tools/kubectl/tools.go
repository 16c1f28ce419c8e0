//go:build tools

// Package kubectl (a build recipe for tests) pins kubectl v1.34.0, the client the chart tests run
// the install notes' commands with: `go build k8s.io/kubernetes/cmd/kubectl` from this module (see
// build.sh). The replace block in go.mod is the one of tools/kube-apiserver: kubernetes v1.34.0's
// staging modules, each pointed at the published v0.34.0 module.
package kubectl

import _ "k8s.io/kubernetes/cmd/kubectl"
