package event

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRecorderTypesCollapsesRuns(t *testing.T) {
	var r Recorder
	for _, ty := range []Type{Started, Writing, Progress, Progress, Progress, Synced, Progress, Done} {
		r.Emit(Event{Event: ty})
	}
	want := []Type{Started, Writing, Progress, Synced, Progress, Done}
	if d := cmp.Diff(want, r.Types()); d != "" {
		t.Errorf("Types (-want +got):\n%s", d)
	}
	if n := len(r.Events()); n != 8 {
		t.Errorf("Events kept %d, want 8", n)
	}
}

func TestMultiFansOutInOrder(t *testing.T) {
	var a, b Recorder
	var order []string
	s := Multi(&a, Func(func(Event) { order = append(order, "f") }), &b, Discard)
	s.Emit(Event{Event: Done})
	if len(a.Events()) != 1 || len(b.Events()) != 1 || len(order) != 1 {
		t.Fatalf("fan-out missed a sink: %d %d %d", len(a.Events()), len(b.Events()), len(order))
	}
}
