//go:build tools

// Package tools pins Argo CD's multi-call binary (application controller, repo server, CLI).
package tools

import (
	_ "github.com/argoproj/argo-cd/v3/cmd"
)
