package flash

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/btyproject/bty/internal/fault"
	"github.com/btyproject/bty/internal/fleet"
)

// TestPlanKind: the first error's kind decides, except that misuse
// outranks every other kind.
func TestPlanKind(t *testing.T) {
	tests := []struct {
		name  string
		kinds []fault.Kind
		want  fault.Kind
	}{
		{"one failure", []fault.Kind{fault.Failed}, fault.Failed},
		{"one missing tool", []fault.Kind{fault.MissingTool}, fault.MissingTool},
		{"the first decides", []fault.Kind{fault.Failed, fault.MissingTool}, fault.Failed},
		{"the first decides, a tool first", []fault.Kind{fault.MissingTool, fault.Failed}, fault.MissingTool},
		{"misuse outranks an earlier kind", []fault.Kind{fault.MissingTool, fault.Failed, fault.Usage}, fault.Usage},
		{"misuse stays", []fault.Kind{fault.Usage, fault.MissingTool}, fault.Usage},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &Plan{}
			var msgs []string
			for i, k := range tc.kinds {
				p.fail(k, "reason %d", i)
				msgs = append(msgs, "reason "+string(rune('0'+i)))
			}
			err := p.Err()
			if err == nil {
				t.Fatal("Err() = nil for a plan with errors")
			}
			if got := fault.KindOf(err); got != tc.want {
				t.Errorf("KindOf(Err()) = %v, want %v", got, tc.want)
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("errors.Is(Err(), %v) = false", tc.want)
			}
			if got, want := err.Error(), strings.Join(msgs, "; "); got != want {
				t.Errorf("Err() = %q, want %q", got, want)
			}
		})
	}
	if err := (&Plan{}).Err(); err != nil {
		t.Errorf("Err() of a plan without errors = %v, want nil", err)
	}
}

// TestCheckMisuse: what the user must fix in the command is a misuse
// error the caller recognises with errors.Is and errors.As, and the
// messages are the plan's reasons, unchanged.
func TestCheckMisuse(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(file, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts Options
		want []string
	}{
		{"nothing given", Options{},
			[]string{"no target given: add --target DEVICE (see: bty list disks)", "no image given: add --image PATH|URL"}},
		{"no target given", Options{Image: file},
			[]string{"no target given: add --target DEVICE (see: bty list disks)"}},
		{"target not a block device", Options{Image: file, Target: file},
			[]string{"target: " + file + " is not a block device; give a disk such as /dev/sda (see `bty list disks`)"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			plan, err := Check(context.Background(), tc.opts)
			if err == nil {
				t.Fatalf("Check(%+v) = nil error, want misuse", tc.opts)
			}
			if !errors.Is(err, fault.Usage) {
				t.Errorf("errors.Is(%q, fault.Usage) = false (kind %v)", err, fault.KindOf(err))
			}
			var fe *fault.Error
			if !errors.As(err, &fe) || fe.Kind != fault.Usage {
				t.Errorf("errors.As(%q, *fault.Error) found %+v, want kind Usage", err, fe)
			}
			if !slices.Equal(plan.Errors, tc.want) || err.Error() != strings.Join(tc.want, "; ") {
				t.Errorf("plan errors %q, error %q; want %q", plan.Errors, err, tc.want)
			}
			if plan.OK {
				t.Error("plan OK with errors")
			}
		})
	}
}

// TestCheckMissingTool: cijoe not on PATH is its own kind, unless there
// is misuse to fix first.
func TestCheckMissingTool(t *testing.T) {
	dir := t.TempDir()
	wf := filepath.Join(dir, "workflow.yaml")
	if err := os.WriteFile(wf, []byte("steps: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	_, err := Check(context.Background(), Options{Provision: fleet.ModeCijoe, CijoeWorkflow: wf})
	if err == nil || !strings.Contains(err.Error(), "cijoe is not on PATH") {
		t.Fatalf("Check without cijoe = %v, want it named", err)
	}
	if got := fault.KindOf(err); got != fault.Usage {
		t.Errorf("kind %v, want misuse (no target and no image outrank the missing tool)", got)
	}
	if !strings.HasPrefix(err.Error(), "cijoe is not on PATH") {
		t.Errorf("error %q: the missing tool was found first and must be named first", err)
	}
}
