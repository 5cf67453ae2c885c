package main

import (
	"context"
	"log/slog"
	"testing"

	"github.com/moatlb/moat/internal/up"
)

// moat up hands --kube-assets-source to up.Run, and leaves it empty by default, so that
// hack/kube-assets.sh's own default ($MOAT_KUBE_ASSETS_SOURCE, which CI pins to build) applies.
func TestUpPassesKubeAssetsSource(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"up"}, ""},
		{[]string{"up", "--kube-assets-source=download"}, "download"},
		{[]string{"up", "--kube-assets-source", "build"}, "build"},
	} {
		var got up.Options
		run := func(_ context.Context, o up.Options) error { got = o; return nil }
		root := newRootCommand()
		for _, c := range root.Commands() {
			if c.Name() == "up" {
				root.RemoveCommand(c)
			}
		}
		root.AddCommand(newUpCommand(func() (*slog.Logger, error) { return nil, nil }, run))
		root.SetArgs(tc.args)
		if err := root.ExecuteContext(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got.KubeAssetsSource != tc.want {
			t.Errorf("moat %v: KubeAssetsSource %q, want %q", tc.args, got.KubeAssetsSource, tc.want)
		}
	}
}
