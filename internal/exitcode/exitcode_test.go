package exitcode

import (
	"errors"
	"fmt"
	"testing"

	"github.com/btyproject/bty/internal/fault"
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
		{"engine misuse", fault.Wrap(fault.Usage, base), Usage},
		{"engine kind wrapped", fmt.Errorf("flash: %w", fault.New(fault.Raced, "target changed")), Raced},
		{"engine failure outranks an inner kind", fault.Wrap(fault.Failed, fault.Wrap(fault.Usage, base)), Failed},
		{"a code outside an engine kind wins", Wrap(Failed, fault.Wrap(fault.NeedRoot, base)), Failed},
		{"an engine kind outside a code wins", fault.Wrap(fault.MissingTool, Wrap(Usage, base)), MissingTool},
		{"joined: the first found", errors.Join(base, fault.Wrap(fault.NeedRoot, base), Wrap(Usage, base)), NeedRoot},
		{"joined with nothing marked", errors.Join(base, base), Failed},
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

func TestFromKind(t *testing.T) {
	// The codes of docs/reference.md, "Exit codes".
	for kind, want := range map[fault.Kind]int{
		fault.Failed:      1,
		fault.Usage:       2,
		fault.NeedRoot:    3,
		fault.MissingTool: 4,
		fault.Raced:       5,
		fault.Kind(99):    1,
	} {
		if got := FromKind(kind); got != want {
			t.Errorf("FromKind(%v) = %d, want %d", kind, got, want)
		}
		if kind == fault.Kind(99) {
			continue
		}
		if got := Code(fault.New(kind, "x")); got != want {
			t.Errorf("Code(error of kind %v) = %d, want %d", kind, got, want)
		}
	}
}
