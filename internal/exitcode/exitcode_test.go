package exitcode

import (
	"errors"
	"fmt"
	"testing"
)

func TestCode(t *testing.T) {
	base := errors.New("boom")
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, OK},
		{"plain error is a failure", base, Failed},
		{"tagged", Wrap(Usage, base), Usage},
		{"tagged then wrapped", fmt.Errorf("ctx: %w", Wrap(Raced, base)), Raced},
		{"new", New(NeedRoot, "run as root"), NeedRoot},
		{"outermost wins", Wrap(MissingTool, Wrap(Usage, base)), MissingTool},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Code(tc.err); got != tc.want {
				t.Errorf("Code(%v) = %d, want %d", tc.err, got, tc.want)
			}
		})
	}
	if Wrap(Usage, nil) != nil {
		t.Error("Wrap(code, nil) must stay nil")
	}
	if !errors.Is(Wrap(Usage, base), base) {
		t.Error("Wrap must keep the chain for errors.Is")
	}
}

func TestIsCobraUsage(t *testing.T) {
	for msg, want := range map[string]bool{
		`unknown flag: --bogus`:               true,
		`unknown command "frob" for "bty"`:    true,
		`accepts 1 arg(s), received 2`:        true,
		`required flag(s) "image" not set`:    true,
		`opening /dev/sdz: no such device`:    false,
		`the image is larger than the target`: false,
	} {
		if got := IsCobraUsage(errors.New(msg)); got != want {
			t.Errorf("IsCobraUsage(%q) = %v, want %v", msg, got, want)
		}
	}
	if IsCobraUsage(nil) {
		t.Error("IsCobraUsage(nil)")
	}
}
