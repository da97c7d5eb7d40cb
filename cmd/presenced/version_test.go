package main

import (
	"runtime/debug"
	"testing"
)

func TestVersionFromBuildInfo(t *testing.T) {
	for _, c := range []struct {
		info debug.BuildInfo
		want string
	}{
		{debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}, "v1.2.3"},
		{debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "3d5b76f29df22c06b2e3ea410f355536cbbdc4a8"}, {Key: "vcs.modified", Value: "true"}}}, "dev-3d5b76f29df2+dirty"},
		{debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "3d5b76f29df22c06b2e3ea410f355536cbbdc4a8"}, {Key: "vcs.modified", Value: "false"}}}, "dev-3d5b76f29df2"},
		{debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "dev"}, // built with -buildvcs=false
	} {
		if got := versionFrom(&c.info, "dev"); got != c.want {
			t.Errorf("versionFrom(%+v) = %q, want %q", c.info, got, c.want)
		}
	}
	if got := versionOf("v9"); got != "v9" {
		t.Errorf("a version set at link time is kept: %q", got)
	}
}
