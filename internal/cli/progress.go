package cli

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/btyproject/bty/internal/event"
	"github.com/btyproject/bty/internal/human"
)

// Progress output modes of bty flash.
const (
	progressText   = "text"
	progressNDJSON = "ndjson"
	progressNone   = "none"
)

// textSink writes a line per lifecycle event and, on a terminal, a live
// progress bar redrawn in place; elsewhere a plain progress line every
// plainEvery or 10 %.
type textSink struct {
	mu         sync.Mutex
	w          io.Writer
	tty        bool
	width      int
	barShown   bool
	lastPlain  time.Time
	lastPct    int
	plainEvery time.Duration
	now        func() time.Time
}

func newTextSink(w io.Writer, tty bool) *textSink {
	return &textSink{w: w, tty: tty, width: 80, plainEvery: 5 * time.Second, lastPct: -1, now: time.Now}
}

func (s *textSink) Emit(e event.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.Event == event.Progress {
		s.progress(e)
		return
	}
	if s.barShown {
		fmt.Fprint(s.w, "\r\033[K")
		s.barShown = false
	}
	line := describe(e)
	if line != "" {
		fmt.Fprintf(s.w, "bty: %s\n", line)
	}
}

func describe(e event.Event) string {
	switch e.Event {
	case event.Started:
		if e.TotalBytes > 0 {
			return fmt.Sprintf("started: %s to write", human.BytesOr(e.TotalBytes, "-"))
		}
		return "started: size known once decoded"
	case event.Writing:
		return fmt.Sprintf("writing %s image", e.Format)
	case event.Synced:
		return "synced to the device"
	case event.Partprobed:
		return "partition table re-read"
	case event.Verified:
		if e.SHA256 != "" {
			return "verified: read back and matched (image sha256 " + e.SHA256 + ")"
		}
		return "verified: read back and matched"
	case event.Provisioning:
		if e.Note != "" {
			return "provisioning: " + e.Note
		}
		return "provisioning: " + e.Mode
	case event.Done:
		line := fmt.Sprintf("done: %s in %s (%s/s)", human.BytesOr(e.TotalBytes, "-"),
			(time.Duration(e.Elapsed * float64(time.Second))).Round(100*time.Millisecond), human.BytesOr(int64(e.Rate), "-"))
		if e.LogPath != "" {
			line += "; cijoe log: " + e.LogPath
		}
		return line
	case event.Failed:
		return "failed: " + e.Note
	case event.Note:
		return "note: " + e.Note
	case event.Output:
		return "| " + e.Line
	}
	return string(e.Event)
}

func (s *textSink) progress(e event.Event) {
	pct := -1
	if e.TotalBytes > 0 {
		pct = int(e.BytesWritten * 100 / e.TotalBytes)
	}
	eta := ""
	if e.TotalBytes > 0 && e.Rate > 0 && e.BytesWritten < e.TotalBytes {
		left := time.Duration(float64(e.TotalBytes-e.BytesWritten) / e.Rate * float64(time.Second))
		eta = "ETA " + human.Duration(left)
	}
	stats := fmt.Sprintf("%s / %s  %s/s  %s", human.BytesOr(e.BytesWritten, "-"), totalStr(e.TotalBytes), human.BytesOr(int64(e.Rate), "-"), eta)
	if s.tty {
		// A fixed share of the width, so the line never grows past it.
		barW := min(s.width-60, 40)
		bar := ""
		if barW >= 10 && pct >= 0 {
			fill := barW * pct / 100
			bar = "[" + strings.Repeat("#", fill) + strings.Repeat(".", barW-fill) + "] "
		}
		pctStr := ""
		if pct >= 0 {
			pctStr = fmt.Sprintf("%3d%% ", pct)
		}
		fmt.Fprintf(s.w, "\r\033[K%s%s%s", bar, pctStr, strings.TrimSpace(stats))
		s.barShown = true
		return
	}
	now := s.now()
	step := pct >= 0 && pct/10 > s.lastPct/10
	if !step && now.Sub(s.lastPlain) < s.plainEvery {
		return
	}
	s.lastPlain = now
	if pct >= 0 {
		s.lastPct = pct
		fmt.Fprintf(s.w, "bty: progress: %d%% %s\n", pct, strings.TrimSpace(stats))
	} else {
		fmt.Fprintf(s.w, "bty: progress: %s\n", strings.TrimSpace(stats))
	}
}

func totalStr(n int64) string {
	if n <= 0 {
		return "?"
	}
	return human.BytesOr(n, "-")
}
