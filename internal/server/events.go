package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/fleet"
)

// subscriberBuffer is how many events a slow client may lag behind
// before it is dropped; writers never wait for a client.
const subscriberBuffer = 256

// hub fans machine events out to SSE subscribers.
type hub struct {
	mu      sync.Mutex
	subs    map[chan api.MachineEvent]struct{}
	closed  bool
	metrics *metrics
}

func newHub(m *metrics) *hub { return &hub{subs: map[chan api.MachineEvent]struct{}{}, metrics: m} }

func (h *hub) subscribe() (chan api.MachineEvent, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, false
	}
	c := make(chan api.MachineEvent, subscriberBuffer)
	h.subs[c] = struct{}{}
	h.metrics.subscribers.Set(float64(len(h.subs)))
	return c, true
}

func (h *hub) unsubscribe(c chan api.MachineEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[c]; ok {
		delete(h.subs, c)
		close(c)
		h.metrics.subscribers.Set(float64(len(h.subs)))
	}
}

// publish sends e to every subscriber without blocking: a subscriber
// whose buffer is full is dropped (its stream ends; it reconnects and
// gets a fresh snapshot).
func (h *hub) publish(e api.MachineEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.subs {
		select {
		case c <- e:
		default:
			delete(h.subs, c)
			close(c)
		}
	}
	h.metrics.subscribers.Set(float64(len(h.subs)))
}

// close ends every stream (server shutdown).
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for c := range h.subs {
		delete(h.subs, c)
		close(c)
	}
	h.metrics.subscribers.Set(0)
}

func (s *Server) publishMachine(m fleet.Machine) {
	s.hub.publish(api.MachineEvent{Type: "upsert", MAC: m.MAC, Machine: &m})
}

// heartbeatEvery keeps idle SSE connections (and proxies) alive.
var heartbeatEvery = 15 * time.Second

// handleEvents streams machine changes: a "snapshot" event with every
// machine on connect, then one "machine" event per change, and comment
// heartbeats.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "streaming is not supported by this connection")
		return
	}
	c, ok := s.hub.subscribe()
	if !ok {
		writeError(w, http.StatusServiceUnavailable, "the server is shutting down")
		return
	}
	defer s.hub.unsubscribe(c)
	// Subscribe first, then snapshot: no change falls between the two.
	machines, err := s.store.ListMachines(r.Context())
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if err := writeSSE(w, "snapshot", machines); err != nil {
		return
	}
	fl.Flush()
	tick := time.NewTicker(heartbeatEvery)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case e, ok := <-c:
			if !ok {
				return
			}
			if err := writeSSE(w, "machine", e); err != nil {
				return
			}
		case <-tick.C:
			if _, err := fmt.Fprint(w, ": heartbeat\n\n"); err != nil {
				return
			}
		}
		fl.Flush()
	}
}

func writeSSE(w http.ResponseWriter, event string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b)
	return err
}
