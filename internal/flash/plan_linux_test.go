package flash

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/btyproject/bty/internal/fault"
	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/imagetest"
	"github.com/btyproject/bty/internal/looptest"
	"github.com/btyproject/bty/internal/provision"
)

// TestCheckMissingToolOnLoop: with a valid image and target, cijoe not on
// PATH is the plan's kind, and nothing else.
func TestCheckMissingToolOnLoop(t *testing.T) {
	looptest.RequireRoot(t)
	set := imagetest.Corpus(t)
	dev := looptest.New(t, set.Size+(8<<20))
	dir := t.TempDir()
	wf := filepath.Join(dir, "workflow.yaml")
	if err := os.WriteFile(wf, []byte("steps: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	_, err := Check(context.Background(), Options{Image: set.Files["raw"], Target: dev.Path, Provision: fleet.ModeCijoe, CijoeWorkflow: wf})
	if err == nil {
		t.Fatal("Check without cijoe succeeded")
	}
	if got := fault.KindOf(err); got != fault.MissingTool || !errors.Is(err, fault.MissingTool) || errors.Is(err, fault.Usage) {
		t.Errorf("Check without cijoe: %v (kind %v), want only a missing tool", err, got)
	}
}

// TestCheckMisuseOnLoop: with a valid image and target, a single misuse
// is the plan's first error and its kind is Usage, even when a failure
// follows (the corpus image has no Linux filesystem for cloud-init).
func TestCheckMisuseOnLoop(t *testing.T) {
	looptest.RequireRoot(t)
	set := imagetest.Corpus(t)
	dev := looptest.New(t, set.Size+(8<<20))
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"no image", Options{}, "no image given: add --image PATH|URL"},
		{"image missing", Options{Image: missing}, "image: "},
		{"unknown provisioning mode", Options{Provision: "magic"}, `unknown provisioning mode "magic": use none, cloud-init or cijoe`},
		{"cloud-init without user-data", Options{Provision: fleet.ModeCloudInit}, "provisioning mode cloud-init needs --user-data FILE"},
		{"user-data missing", Options{Provision: fleet.ModeCloudInit, UserData: FileInput(missing)}, "--user-data " + missing + ": no such file"},
		{"user-data a directory", Options{Provision: fleet.ModeCloudInit, UserData: FileInput(dir)}, "--user-data " + dir + " is a directory, not a file"},
		// A seed given as data (the live env's, fetched from bty-web) is
		// checked as a file's is.
		{"user-data data without a header", Options{Provision: fleet.ModeCloudInit, UserData: Input{Path: "(server)", Data: []byte("packages: [htop]\n")}},
			"--user-data (server): user-data starts with"},
		{"user-data data too large", Options{Provision: fleet.ModeCloudInit, UserData: Input{Path: "(server)", Data: make([]byte, provision.MaxInputBytes+1)}},
			"--user-data (server) is larger than"},
		{"meta-data data not a mapping", Options{Provision: fleet.ModeCloudInit, UserData: Input{Path: "(server)", Data: []byte("#cloud-config\n")},
			MetaData: Input{Path: "(server)", Data: []byte("- a\n")}}, "--meta-data (server): "},
		// vendor-data (the live env's phone_home) is checked as user-data.
		{"vendor-data data without a header", Options{Provision: fleet.ModeCloudInit, UserData: Input{Path: "(server)", Data: []byte("#cloud-config\n")},
			VendorData: Input{Path: "(phone_home)", Data: []byte("phone_home: {}\n")}}, "vendor-data (phone_home): vendor-data starts with"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.opts
			o.Target = dev.Path
			if o.Image == "" && tc.name != "no image" {
				o.Image = set.Files["raw"]
			}
			plan, err := Check(context.Background(), o)
			if err == nil {
				t.Fatalf("Check(%+v) succeeded, want misuse", o)
			}
			var fe *fault.Error
			if !errors.Is(err, fault.Usage) || !errors.As(err, &fe) || fe.Kind != fault.Usage {
				t.Errorf("%v: kind %v, want misuse", err, fault.KindOf(err))
			}
			if len(plan.Errors) == 0 || !strings.HasPrefix(plan.Errors[0], tc.want) {
				t.Errorf("plan errors %q, want the first starting %q", plan.Errors, tc.want)
			}
		})
	}
}
