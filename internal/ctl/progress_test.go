package ctl

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// fakeClock advances only when told.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestProgressTerminal(t *testing.T) {
	var buf bytes.Buffer
	clk := &fakeClock{t: time.Unix(1e9, 0)}
	e := &env{stderr: &buf, stderrTTY: true, width: 120, now: clk.now}
	p := newProgress(e, "uploading x.img.zst", 100<<20)
	clk.t = clk.t.Add(2 * time.Second)
	p.update(20<<20, 100<<20) // 10 MiB/s, 8 s to go
	got := buf.String()
	for _, want := range []string{"\r\033[K", "uploading x.img.zst [", " 20% ", "20 MiB / 100 MiB", "10 MiB/s", "ETA 0:08"} {
		if !strings.Contains(got, want) {
			t.Errorf("bar %q lacks %q", got, want)
		}
	}
	// Redraws are throttled: a quick second update draws nothing.
	buf.Reset()
	clk.t = clk.t.Add(10 * time.Millisecond)
	p.update(21<<20, 100<<20)
	if buf.Len() != 0 {
		t.Errorf("redrew after 10 ms: %q", buf.String())
	}
	p.finish()
	if buf.String() != "\r\033[K" {
		t.Errorf("finish wrote %q, want the line cleared", buf.String())
	}
	// The bar never outgrows a narrow terminal.
	buf.Reset()
	e.width = 50
	p = newProgress(e, "uploading a-rather-long-image-name.img.zst", 100<<20)
	clk.t = clk.t.Add(time.Second)
	p.update(50<<20, 100<<20)
	if line := strings.TrimPrefix(buf.String(), "\r\033[K"); len(line) >= 50 {
		t.Errorf("line of %d characters on a 50-column terminal: %q", len(line), line)
	}
}

func TestProgressPlain(t *testing.T) {
	var buf bytes.Buffer
	clk := &fakeClock{t: time.Unix(1e9, 0)}
	e := &env{stderr: &buf, width: 80, now: clk.now}
	p := newProgress(e, "uploading x.img", 1000)
	for n := int64(10); n <= 1000; n += 10 {
		clk.t = clk.t.Add(10 * time.Millisecond)
		p.update(n, 1000)
	}
	p.finish()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	// One line per 10 % step below 100 %; the caller reports the end.
	if len(lines) != 9 || !strings.HasPrefix(lines[0], "bty-ctl: uploading x.img: 10% ") || !strings.Contains(lines[8], "90%") {
		t.Errorf("plain progress:\n%s", buf.String())
	}
	if strings.Contains(buf.String(), "\r") {
		t.Error("plain progress drew a bar")
	}
	// Unknown total: a line every 5 s.
	buf.Reset()
	p = newProgress(e, "hashing x.img", -1)
	for i := 0; i < 12; i++ {
		clk.t = clk.t.Add(time.Second)
		p.update(int64(i+1)<<20, -1)
	}
	if n := strings.Count(buf.String(), "\n"); n != 2 || !strings.Contains(buf.String(), "/ ?") {
		t.Errorf("unknown-total progress over 12 s:\n%s", buf.String())
	}
}
