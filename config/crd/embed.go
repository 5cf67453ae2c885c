// Package crd embeds moat's CustomResourceDefinitions — generated into bases/ by controller-gen
// from api/ — so that a program can install them: moat up applies them to the cluster it runs
// the controller against.
package crd

import "embed"

// Bases holds bases/*.yaml, one CustomResourceDefinition per file.
//
//go:embed bases/*.yaml
var Bases embed.FS
