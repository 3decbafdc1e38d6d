package fault

import (
	"errors"
	"fmt"
	"testing"
)

func TestKindOf(t *testing.T) {
	base := errors.New("boom")
	tests := []struct {
		name string
		err  error
		want Kind
	}{
		{"nil", nil, Failed},
		{"plain error is a failure", base, Failed},
		{"marked", Wrap(Usage, base), Usage},
		{"marked then wrapped", fmt.Errorf("ctx: %w", Wrap(Raced, base)), Raced},
		{"new", New(NeedRoot, "run as root"), NeedRoot},
		{"outermost wins", Wrap(MissingTool, Wrap(Usage, base)), MissingTool},
		{"explicit failure outranks an inner kind", Wrap(Failed, Wrap(Usage, base)), Failed},
		{"joined: the first kind found", errors.Join(Wrap(MissingTool, base), Wrap(Failed, base)), MissingTool},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := KindOf(tc.err); got != tc.want {
				t.Errorf("KindOf(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestErrorsIs(t *testing.T) {
	base := errors.New("boom")
	err := fmt.Errorf("planning: %w", New(Usage, "no image given: %w", base))
	if !errors.Is(err, Usage) {
		t.Errorf("errors.Is(%v, Usage) = false", err)
	}
	if errors.Is(err, NeedRoot) || errors.Is(err, Failed) {
		t.Errorf("errors.Is(%v) matched a kind it does not carry", err)
	}
	if !errors.Is(err, base) {
		t.Error("New with %w must keep the chain")
	}
	if got, want := err.Error(), "planning: no image given: boom"; got != want {
		t.Errorf("message %q, want %q (a kind must not change the message)", got, want)
	}
	var fe *Error
	if !errors.As(err, &fe) || fe.Kind != Usage {
		t.Errorf("errors.As(*Error) found %+v, want kind Usage", fe)
	}
	if Wrap(Usage, nil) != nil {
		t.Error("Wrap(kind, nil) must stay nil")
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{Failed: "failed", Usage: "misuse", NeedRoot: "root required",
		MissingTool: "required tool missing", Raced: "target changed", Kind(42): "fault.Kind(42)"} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", k, got, want)
		}
	}
}
