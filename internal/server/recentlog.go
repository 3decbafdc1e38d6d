package server

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// recentLog keeps the last warnings and errors the server logged, for
// the dashboard's "last errors" (a fixed ring; oldest dropped first).
type recentLog struct {
	mu      sync.Mutex
	entries []logEntry
	next    int
	full    bool
}

// logEntry is one remembered log record.
type logEntry struct {
	Time  time.Time
	Level string
	Msg   string
	Attrs string // key=value pairs as the text handler would print them
}

func newRecentLog(n int) *recentLog { return &recentLog{entries: make([]logEntry, n)} }

func (l *recentLog) add(e logEntry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries[l.next] = e
	l.next = (l.next + 1) % len(l.entries)
	if l.next == 0 {
		l.full = true
	}
}

// last returns up to n entries, newest first.
func (l *recentLog) last(n int) []logEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	size := l.next
	if l.full {
		size = len(l.entries)
	}
	n = min(n, size)
	out := make([]logEntry, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, l.entries[(l.next-i+len(l.entries))%len(l.entries)])
	}
	return out
}

// teeHandler passes records to the server's handler and remembers
// warnings and errors in a recentLog.
type teeHandler struct {
	inner  slog.Handler
	ring   *recentLog
	prefix string // attributes added with WithAttrs/WithGroup, as text
	group  string
}

func (h *teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn || h.inner.Enabled(ctx, l)
}

func (h *teeHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		var b strings.Builder
		b.WriteString(h.prefix)
		r.Attrs(func(a slog.Attr) bool {
			writeAttr(&b, h.group, a)
			return true
		})
		h.ring.add(logEntry{Time: r.Time, Level: r.Level.String(), Msg: r.Message, Attrs: strings.TrimSpace(b.String())})
	}
	if h.inner.Enabled(ctx, r.Level) {
		return h.inner.Handle(ctx, r)
	}
	return nil
}

func (h *teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.prefix)
	for _, a := range as {
		writeAttr(&b, h.group, a)
	}
	return &teeHandler{inner: h.inner.WithAttrs(as), ring: h.ring, prefix: b.String(), group: h.group}
}

func (h *teeHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &teeHandler{inner: h.inner.WithGroup(name), ring: h.ring, prefix: h.prefix, group: h.group + name + "."}
}

func writeAttr(b *strings.Builder, group string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	if a.Value.Kind() == slog.KindGroup {
		for _, g := range a.Value.Group() {
			writeAttr(b, group+a.Key+".", g)
		}
		return
	}
	fmt.Fprintf(b, " %s%s=%q", group, a.Key, a.Value.String())
}
