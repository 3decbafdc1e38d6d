package server

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestRecentLog(t *testing.T) {
	var out bytes.Buffer
	ring := newRecentLog(3)
	log := slog.New(&teeHandler{inner: slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelError}), ring: ring})
	log.Info("ignored")
	log.With("mac", "aa").WithGroup("g").Warn("one", "k", 1)
	log.Error("two")
	log.Warn("three")
	log.Warn("four")
	got := ring.last(10)
	var msgs []string
	for _, e := range got {
		msgs = append(msgs, e.Msg)
	}
	if strings.Join(msgs, ",") != "four,three,two" {
		t.Fatalf("newest first, three kept: got %v", msgs)
	}
	all := newRecentLog(5)
	slog.New(&teeHandler{inner: slog.NewTextHandler(&out, nil), ring: all}).With("mac", "aa").WithGroup("g").Warn("one", "k", 1)
	if e := all.last(1)[0]; e.Attrs != `mac="aa" g.k="1"` || e.Level != "WARN" {
		t.Fatalf("attrs %q level %q", e.Attrs, e.Level)
	}
	// The inner handler still filters by its own level.
	if strings.Contains(out.String(), "ignored") || !strings.Contains(out.String(), "two") || strings.Contains(out.String(), "msg=three") {
		t.Fatalf("inner handler output:\n%s", out.String())
	}
}
