package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/btyproject/bty/internal/event"
)

func progressEvents() []event.Event {
	const total = 1000 << 20
	evs := []event.Event{
		{Event: event.Started, TotalBytes: total},
		{Event: event.Writing, Format: "zst"},
	}
	for i := 1; i <= 20; i++ {
		evs = append(evs, event.Event{Event: event.Progress, BytesWritten: int64(i) * total / 20, TotalBytes: total, Rate: 100 << 20})
	}
	return append(evs,
		event.Event{Event: event.Synced},
		event.Event{Event: event.Partprobed},
		event.Event{Event: event.Done, TotalBytes: total, Rate: 100 << 20, Elapsed: 10})
}

// TestTextSinkPlain: off a terminal, one line per lifecycle event and a
// progress line per 10 % (at most), no control characters.
func TestTextSinkPlain(t *testing.T) {
	var b bytes.Buffer
	s := newTextSink(&b, false)
	s.now = func() time.Time { return time.Unix(0, 0) } // the clock never allows a time-based line
	for _, e := range progressEvents() {
		s.Emit(e)
	}
	want := []string{
		"bty: started: 1000 MiB to write",
		"bty: writing zst image",
		"bty: progress: 5% 50 MiB / 1000 MiB  100 MiB/s  ETA 0:10",
		"bty: progress: 10% 100 MiB / 1000 MiB  100 MiB/s  ETA 0:09",
		"bty: progress: 20% 200 MiB / 1000 MiB  100 MiB/s  ETA 0:08",
		"bty: progress: 30% 300 MiB / 1000 MiB  100 MiB/s  ETA 0:07",
		"bty: progress: 40% 400 MiB / 1000 MiB  100 MiB/s  ETA 0:06",
		"bty: progress: 50% 500 MiB / 1000 MiB  100 MiB/s  ETA 0:05",
		"bty: progress: 60% 600 MiB / 1000 MiB  100 MiB/s  ETA 0:04",
		"bty: progress: 70% 700 MiB / 1000 MiB  100 MiB/s  ETA 0:03",
		"bty: progress: 80% 800 MiB / 1000 MiB  100 MiB/s  ETA 0:02",
		"bty: progress: 90% 900 MiB / 1000 MiB  100 MiB/s  ETA 0:01",
		"bty: progress: 100% 1000 MiB / 1000 MiB  100 MiB/s",
		"bty: synced to the device",
		"bty: partition table re-read",
		"bty: done: 1000 MiB in 10s (100 MiB/s)",
	}
	got := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("text output (-want +got):\n%s", d)
	}
}

// TestTextSinkTerminal: on a terminal the bar is redrawn in place and
// cleared before the next lifecycle line.
func TestTextSinkTerminal(t *testing.T) {
	var b bytes.Buffer
	s := newTextSink(&b, true)
	for _, e := range progressEvents() {
		s.Emit(e)
	}
	out := b.String()
	for _, want := range []string{"\r\033[K[", "]  50% 500 MiB / 1000 MiB  100 MiB/s  ETA 0:05", "\r\033[Kbty: synced to the device\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("terminal output lacks %q:\n%q", want, out)
		}
	}
	for _, l := range strings.FieldsFunc(out, func(r rune) bool { return r == '\r' || r == '\n' }) {
		if len(l) > 80 {
			t.Errorf("line wider than the 80-column terminal: %q", l)
		}
	}
	if n := strings.Count(out, "\n"); n != 5 {
		t.Errorf("%d lines, want 5 (progress must not scroll):\n%q", n, out)
	}
}

func TestNDJSONSink(t *testing.T) {
	var b bytes.Buffer
	s := event.NewNDJSON(&b)
	evs := progressEvents()
	for _, e := range evs {
		s.Emit(e)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != len(evs) {
		t.Fatalf("%d lines for %d events", len(lines), len(evs))
	}
	var last map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil {
		t.Fatal(err)
	}
	if last["event"] != "done" || last["total_bytes"] != float64(1000<<20) {
		t.Errorf("last line %v", last)
	}
}
