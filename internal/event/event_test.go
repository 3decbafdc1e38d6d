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
	var got []string
	named := func(name string) Sink {
		return Func(func(e Event) { got = append(got, name+" "+string(e.Event)) })
	}
	var rec Recorder
	s := Multi(named("a"), &rec, Discard, named("b"), named("c"))
	s.Emit(Event{Event: Started})
	s.Emit(Event{Event: Done})
	want := []string{"a started", "b started", "c started", "a done", "b done", "c done"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("sinks saw (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]Type{Started, Done}, rec.Types()); d != "" {
		t.Errorf("the Recorder between them saw (-want +got):\n%s", d)
	}
}
