package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
)

// eventLogBytes bounds the bytes of encoded events the hub retains for
// subscribers, whatever their number: a subscriber further behind is
// sent a fresh snapshot (or, without snapshots, a resync event) instead
// of the events it missed.
const eventLogBytes = 8 << 20

// eventOverhead is what the hub counts per retained event beyond its
// JSON (the slice header and allocation rounding), so tiny events still
// bound the count.
const eventOverhead = 64

// eventBatch is how many events a subscriber takes at a time.
const eventBatch = 256

// hub fans machine events out to SSE subscribers. Publishing encodes an
// event once and appends it to a shared log (oldest dropped beyond
// maxBytes), then wakes every waiting subscriber by closing one channel:
// O(1) whatever the number of subscribers. Each subscriber is only a
// cursor into the log, read from its own goroutine (the SSE handler), so
// a stuck subscriber holds no copy of anything and costs publishers
// nothing.
type hub struct {
	mu       sync.Mutex
	log      [][]byte      // encoded events, oldest first
	first    uint64        // sequence number of log[0]
	bytes    int           // retained: sum of len+eventOverhead over log
	maxBytes int           // the bound on bytes
	wake     chan struct{} // closed (and replaced) on every publish
	subs     int
	closed   bool
	metrics  *metrics
}

// subscription is one subscriber's place in the hub's log.
type subscription struct {
	next uint64 // sequence number of the next event to read
	gone bool
}

func newHub(m *metrics) *hub {
	return &hub{maxBytes: eventLogBytes, wake: make(chan struct{}), metrics: m}
}

func (h *hub) subscribe() (*subscription, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, false
	}
	h.subs++
	h.metrics.subscribers.Set(float64(h.subs))
	return &subscription{next: h.first + uint64(len(h.log))}, true
}

func (h *hub) unsubscribe(s *subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.gone {
		return
	}
	s.gone = true
	h.subs--
	h.metrics.subscribers.Set(float64(h.subs))
}

// publish appends e to the log and wakes the subscribers; it never
// waits for one and does no work per subscriber.
func (h *hub) publish(e api.MachineEvent) {
	b, err := json.Marshal(e)
	if err != nil {
		return // a machine record always encodes
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.log = append(h.log, b)
	h.bytes += len(b) + eventOverhead
	for h.bytes > h.maxBytes && len(h.log) > 0 {
		h.bytes -= len(h.log[0]) + eventOverhead
		h.log[0] = nil
		h.log = h.log[1:]
		h.first++
	}
	close(h.wake)
	h.wake = make(chan struct{})
}

// read returns the events after s's cursor (at most eventBatch, appended
// to buf[:0]) and advances it. lost: s fell behind the retained log (its
// cursor now points at the newest end; send a fresh snapshot, or a
// resync event). wait is
// closed on the next publish; ok is false once the hub is closed.
func (h *hub) read(s *subscription, buf [][]byte) (evs [][]byte, lost bool, wait <-chan struct{}, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, false, nil, false
	}
	end := h.first + uint64(len(h.log))
	if s.next < h.first {
		s.next = end
		return buf[:0], true, h.wake, true
	}
	from := int(s.next - h.first)
	to := min(len(h.log), from+eventBatch)
	evs = append(buf[:0], h.log[from:to]...)
	s.next += uint64(len(evs))
	return evs, false, h.wake, true
}

// end is the sequence number the next published event gets.
func (h *hub) end() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.first + uint64(len(h.log))
}

// rewind moves s's cursor back to seq, so it reads the events from seq
// on, if the log still holds them all; it reports whether it did.
func (h *hub) rewind(s *subscription, seq uint64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if seq < h.first || seq > h.first+uint64(len(h.log)) {
		return false
	}
	s.next = seq
	return true
}

// retained reports the log's accounting: events and bytes held.
func (h *hub) retained() (events, bytes int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.log), h.bytes
}

// close ends every stream (server shutdown).
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	h.log, h.bytes = nil, 0
	close(h.wake)
	h.metrics.subscribers.Set(0)
}

func (s *Server) publishMachine(m fleet.Machine) {
	s.discovery.note(m, false)
	m = m.Listed()
	s.hub.publish(api.MachineEvent{Type: "upsert", MAC: m.MAC, Machine: &m})
}

// publishDelete announces that the machine mac is gone.
func (s *Server) publishDelete(mac fleet.MAC) {
	s.discovery.note(fleet.Machine{MAC: mac}, true)
	s.hub.publish(api.MachineEvent{Type: "delete", MAC: mac})
}

// heartbeatEvery keeps idle SSE connections (and proxies) alive.
var heartbeatEvery = 15 * time.Second

// resyncEvent tells a client that asked for no snapshot that it fell
// behind the hub's retained events: it should re-read what it shows
// (GET /machines, a page of the table).
const resyncEvent = "event: resync\ndata: {}\n\n"

// handleEvents streams machine changes: a "snapshot" event with every
// machine on connect, then one "machine" event per change, and comment
// heartbeats. A client too slow to keep up with the hub's retained
// events gets a fresh "snapshot" event in place of those it missed.
// With ?snapshot=0 there is no snapshot, on connect or after: a client
// that fell behind gets a "resync" event instead, a few bytes whatever
// the fleet's size.
//
// With ?mac=MAC the stream is that machine's only: its record as a
// "machine" event on connect and whenever this client fell behind, then
// its changes (bty-ctl machines reflash --wait follows a flash so).
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	snapshot := true
	switch v := r.URL.Query().Get("snapshot"); v {
	case "", "1":
	case "0":
		snapshot = false
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("snapshot=%q: want 1 (the default: every machine on connect) or 0 (none; a resync event when this client falls behind)", v))
		return
	}
	var only []byte // the "mac" field of the one machine's events
	var mac fleet.MAC
	if v := r.URL.Query().Get("mac"); v != "" {
		var err error
		if mac, err = fleet.ParseMAC(v); err != nil {
			writeError(w, http.StatusBadRequest, "mac: "+err.Error())
			return
		}
		if _, ok := s.apiMachine(w, r, mac); !ok {
			return
		}
		only = []byte(`"mac":"` + mac.String() + `"`)
		snapshot = false
	}
	// sendOne writes the one machine's current record.
	sendOne := func(w io.Writer) error {
		m, err := s.store.GetMachine(r.Context(), mac)
		if err != nil {
			return err
		}
		b, err := json.Marshal(api.MachineEvent{Type: "upsert", MAC: mac, Machine: &m})
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "event: machine\ndata: %s\n\n", b)
		return err
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "streaming is not supported by this connection")
		return
	}
	sub, ok := s.hub.subscribe()
	if !ok {
		writeError(w, http.StatusServiceUnavailable, "the server is shutting down")
		return
	}
	defer s.hub.unsubscribe(sub)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 32<<10)
	rc := http.NewResponseController(w)
	// Every write must go through within s.eventWriteTimeout: a client
	// that stops reading is dropped, rather than holding its goroutine
	// and what it was sending for as long as it stays connected.
	deadline := func() { _ = rc.SetWriteDeadline(time.Now().Add(s.eventWriteTimeout)) }
	flush := func() error {
		deadline()
		if err := bw.Flush(); err != nil {
			return err
		}
		fl.Flush()
		return nil
	}
	// Subscribed first, then the snapshot: no change falls between the
	// two (one made meanwhile may come twice, as part of the snapshot
	// and as an event).
	deadline()
	if snapshot {
		if err := s.sendSnapshot(r.Context(), bw, sub, deadline); err != nil {
			return
		}
	} else if _, err := io.WriteString(bw, ": subscribed\n\n"); err != nil {
		return
	}
	if only != nil && sendOne(bw) != nil {
		return
	}
	if flush() != nil {
		return
	}
	tick := time.NewTicker(heartbeatEvery)
	defer tick.Stop()
	var buf [][]byte
	for {
		evs, lost, wait, ok := s.hub.read(sub, buf)
		if !ok {
			return
		}
		buf = evs
		switch {
		case lost && only != nil:
			if sendOne(bw) != nil || flush() != nil {
				return
			}
			continue
		case lost && !snapshot:
			if _, err := io.WriteString(bw, resyncEvent); err != nil || flush() != nil {
				return
			}
			continue
		case lost:
			if err := s.sendSnapshot(r.Context(), bw, sub, deadline); err != nil || flush() != nil {
				return
			}
			continue
		case len(evs) > 0:
			deadline()
			for _, b := range evs {
				if only != nil && !bytes.Contains(b, only) {
					continue
				}
				if _, err := fmt.Fprintf(bw, "event: machine\ndata: %s\n\n", b); err != nil {
					return
				}
			}
			clear(buf)
			if flush() != nil {
				return
			}
			continue
		}
		select {
		case <-r.Context().Done():
			return
		case <-wait:
		case <-tick.C:
			deadline()
			if _, err := io.WriteString(bw, ": heartbeat\n\n"); err != nil || flush() != nil {
				return
			}
		}
	}
}

// snapshotPage is how many machines a snapshot reads from the store at
// a time: a client reading slowly holds at most one page.
const snapshotPage = 500

// defaultEventWriteTimeout bounds every write to an event stream
// (Server.eventWriteTimeout).
const defaultEventWriteTimeout = 30 * time.Second

// snapshotReuse is how long an encoded snapshot is shared: subscribers
// that ask for one within it (a page reload, a rack of browsers, a
// reconnect wave) get the same bytes, encoded once.
const snapshotReuse = time.Second

// snapshotChunk is how much of a snapshot goes out per write deadline.
const snapshotChunk = 256 << 10

// snapshotCache is the last encoded snapshot: its bytes (the whole
// "snapshot" event), the hub position it is current to, and when it
// was made. mu is held while one is made, so subscribers asking at once
// wait for it instead of each making their own.
type snapshotCache struct {
	mu   sync.Mutex
	data []byte
	seq  uint64
	at   time.Time
}

// sendSnapshot sends sub a "snapshot" event current to at least sub's
// cursor, so the events after the cursor follow it (one made while the
// snapshot was read may come twice). A snapshot made less than
// snapshotReuse ago is reused, and sub's cursor moved back to where
// that snapshot is current to, when the hub still retains every event
// since; otherwise a new one is made. tick renews the write deadline,
// once per chunk.
func (s *Server) sendSnapshot(ctx context.Context, w io.Writer, sub *subscription, tick func()) error {
	c := &s.snap
	c.mu.Lock()
	if c.data == nil || time.Since(c.at) > snapshotReuse || !s.hub.rewind(sub, c.seq) {
		seq := s.hub.end()
		var b bytes.Buffer
		if err := s.writeSnapshot(ctx, &b); err != nil {
			c.mu.Unlock()
			return err
		}
		// sub's cursor stays where it is (before seq): the snapshot is
		// newer, and the events after the cursor repeat or follow it.
		c.data, c.seq, c.at = b.Bytes(), seq, time.Now()
	}
	data := c.data
	c.mu.Unlock()
	for len(data) > 0 {
		tick()
		n := min(len(data), snapshotChunk)
		if _, err := w.Write(data[:n]); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// writeSnapshot writes the "snapshot" event with every machine, read
// from the store a page at a time (by MAC) and encoded one machine at a
// time into w: the fleet's records are never in memory all at once.
func (s *Server) writeSnapshot(ctx context.Context, w io.Writer) error {
	if _, err := io.WriteString(w, "event: snapshot\ndata: ["); err != nil {
		return err
	}
	var after fleet.MAC
	first := true
	for {
		p, err := s.store.QueryMachines(ctx, store.MachineQuery{After: after, Limit: snapshotPage})
		if err != nil {
			return err
		}
		for i := range p.Machines {
			m := p.Machines[i].Listed()
			b, err := json.Marshal(&m)
			if err != nil {
				return err
			}
			if !first {
				if _, err := io.WriteString(w, ","); err != nil {
					return err
				}
			}
			first = false
			if _, err := w.Write(b); err != nil {
				return err
			}
		}
		if len(p.Machines) < snapshotPage {
			break
		}
		after = p.Machines[len(p.Machines)-1].MAC
	}
	_, err := io.WriteString(w, "]\n\n")
	return err
}
