// Package event defines the progress events every bty surface consumes:
// the CLI prints them, the TUI draws them, the server and live env relay
// them. One stream, one shape (docs/reference.md,
// "Progress events").
package event

import (
	"encoding/json"
	"io"
	"sync"
	"time"
)

// Type names a lifecycle step.
type Type string

// The event types, in the order a successful flash emits them.
const (
	Started      Type = "started"      // TotalBytes
	Writing      Type = "writing"      // Format
	Progress     Type = "progress"     // BytesWritten, TotalBytes, Rate
	Synced       Type = "synced"       //
	Partprobed   Type = "partprobed"   // Note when partition nodes are missing
	Verified     Type = "verified"     // SHA256
	Provisioning Type = "provisioning" // Mode
	Done         Type = "done"         // BytesWritten, Elapsed
	Failed       Type = "failed"       // Note
	Note         Type = "note"         // Note: something the user should know
	Output       Type = "output"       // Line: a line of an external tool's output
)

// Event is one step of a flash. Fields irrelevant to a type stay zero and
// are omitted from JSON.
type Event struct {
	Event        Type      `json:"event"`
	Time         time.Time `json:"time"`
	TotalBytes   int64     `json:"total_bytes,omitempty"`
	BytesWritten int64     `json:"bytes_written,omitempty"`
	// Rate is the average write rate so far in bytes per second.
	Rate    float64 `json:"rate,omitempty"`
	Format  string  `json:"format,omitempty"`
	Mode    string  `json:"mode,omitempty"`
	SHA256  string  `json:"sha256,omitempty"`
	Note    string  `json:"note,omitempty"`
	Line    string  `json:"line,omitempty"`
	LogPath string  `json:"log_path,omitempty"`
	Elapsed float64 `json:"elapsed_seconds,omitempty"`
	// A delta flash's counts (progress, done): bytes fetched from the
	// source; the image's chunks; those compared with the target so
	// far, found equal, fetched and written; the zero chunks (zeroed,
	// not compared).
	BytesFetched   int64 `json:"bytes_fetched,omitempty"`
	ChunksTotal    int64 `json:"chunks_total,omitempty"`
	ChunksCompared int64 `json:"chunks_compared,omitempty"`
	ChunksZero     int64 `json:"chunks_zero,omitempty"`
	ChunksEqual    int64 `json:"chunks_equal,omitempty"`
	ChunksFetched  int64 `json:"chunks_fetched,omitempty"`
	ChunksWritten  int64 `json:"chunks_written,omitempty"`
}

// Sink receives events. Implementations must be safe for concurrent use
// and must not block for long: the engine calls them from its hot path.
type Sink interface {
	Emit(Event)
}

// Func adapts a function to a Sink.
type Func func(Event)

// Emit calls f.
func (f Func) Emit(e Event) { f(e) }

// Discard drops every event.
var Discard Sink = Func(func(Event) {})

// Multi fans an event out to several sinks in order.
func Multi(sinks ...Sink) Sink {
	return Func(func(e Event) {
		for _, s := range sinks {
			s.Emit(e)
		}
	})
}

// Recorder keeps every event; tests and the --json result use it.
type Recorder struct {
	mu     sync.Mutex
	events []Event
}

// Emit records e.
func (r *Recorder) Emit(e Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

// Events returns a copy of what was recorded.
func (r *Recorder) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

// Types returns the recorded event types in order, leaving out repeats of
// the same type in a row (progress events come in bursts).
func (r *Recorder) Types() []Type {
	var out []Type
	for _, e := range r.Events() {
		if len(out) > 0 && out[len(out)-1] == e.Event {
			continue
		}
		out = append(out, e.Event)
	}
	return out
}

// NDJSON writes one JSON object per event and line (bty flash
// --progress ndjson, bty-tui --json-events).
type NDJSON struct {
	mu  sync.Mutex
	enc *json.Encoder
}

// NewNDJSON returns a sink writing to w.
func NewNDJSON(w io.Writer) *NDJSON { return &NDJSON{enc: json.NewEncoder(w)} }

// Emit writes e as one line.
func (s *NDJSON) Emit(e Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.enc.Encode(e)
}
