// Package hack holds the project's scripts; it exists as a Go package only so that moat up can
// embed the script that builds the Kubernetes API server it runs.
package hack

import _ "embed"

// KubeAssetsScript is kube-assets.sh: it builds (once) and caches kube-apiserver, etcd and
// kubectl from the Go module proxy and prints the directory that holds them.
//
//go:embed kube-assets.sh
var KubeAssetsScript string
