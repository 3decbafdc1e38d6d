package ctl

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/btyproject/bty/internal/human"
)

// progress draws a transfer's progress on stderr: on a terminal a bar
// redrawn in place (bytes, percentage, rate, ETA); elsewhere a plain
// line every plainEvery or every 10 %, so logs stay readable.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	tty   bool
	width int
	label string
	total int64
	now   func() time.Time

	start      time.Time
	n          int64
	shown      bool
	lastDraw   time.Time
	lastPlain  time.Time
	lastPct    int
	plainEvery time.Duration
}

func newProgress(e *env, label string, total int64) *progress {
	now := e.now
	p := &progress{w: e.stderr, tty: e.stderrTTY, width: e.width, label: label, total: total, now: now,
		lastPct: -1, plainEvery: 5 * time.Second}
	p.start = now()
	p.lastPlain = p.start
	return p
}

// update records n bytes done so far; safe from any goroutine.
func (p *progress) update(n, _ int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n = n
	now := p.now()
	if p.tty {
		if now.Sub(p.lastDraw) < 100*time.Millisecond && n != p.total {
			return
		}
		p.lastDraw = now
		p.drawBar(now)
		return
	}
	pct := p.pct()
	step := pct >= 0 && pct/10 > p.lastPct/10 && pct < 100
	if !step && now.Sub(p.lastPlain) < p.plainEvery {
		return
	}
	p.lastPlain = now
	if pct >= 0 {
		p.lastPct = pct
		fmt.Fprintf(p.w, "bty-ctl: %s: %d%% %s\n", p.label, pct, p.stats(now))
	} else {
		fmt.Fprintf(p.w, "bty-ctl: %s: %s\n", p.label, p.stats(now))
	}
}

// finish clears the bar; the caller prints the outcome.
func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shown {
		fmt.Fprint(p.w, "\r\033[K")
		p.shown = false
	}
}

func (p *progress) pct() int {
	if p.total <= 0 {
		return -1
	}
	return int(p.n * 100 / p.total)
}

func rate(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

func (p *progress) stats(now time.Time) string {
	d := now.Sub(p.start)
	r := rate(p.n, d)
	total := "?"
	if p.total > 0 {
		total = human.BytesOr(p.total, "-")
	}
	s := fmt.Sprintf("%s / %s  %s/s", human.BytesOr(p.n, "-"), total, human.BytesOr(int64(r), "-"))
	if p.total > 0 && r > 0 && p.n < p.total {
		s += "  ETA " + human.Duration(time.Duration(float64(p.total-p.n)/r*float64(time.Second)))
	}
	return s
}

func (p *progress) drawBar(now time.Time) {
	stats := p.stats(now)
	pct := p.pct()
	line := p.label + " "
	if pct >= 0 {
		// The bar takes what the terminal has left after the label and
		// room for the statistics, so it keeps its width as they change.
		barW := min(p.width-len(line)-50, 40)
		if barW >= 8 {
			fill := barW * pct / 100
			line += "[" + strings.Repeat("#", fill) + strings.Repeat(".", barW-fill) + "] "
		}
		line += fmt.Sprintf("%3d%% ", pct)
	}
	line += stats
	if p.width > 1 && len(line) >= p.width {
		line = line[:p.width-1]
	}
	fmt.Fprintf(p.w, "\r\033[K%s", line)
	p.shown = true
}
