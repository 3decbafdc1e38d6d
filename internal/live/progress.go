package live

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/btyproject/bty/internal/event"
	"github.com/btyproject/bty/internal/human"
)

// progressEvery is how often a flash's progress goes to the consoles:
// often enough to see it move, rarely enough for a serial log to stay
// readable.
const progressEvery = 5 * time.Second

// consoleSink prints a flash's events as plain lines ("bty-live: ...")
// on every console: a serial console server keeps a log, so no cursor
// tricks, and progress is throttled.
type consoleSink struct {
	mu   sync.Mutex
	w    io.Writer
	now  func() time.Time
	last time.Time
	pct  int
	// size is the decoded size the server gave, for a stream whose own
	// header does not say.
	size int64
}

func newConsoleSink(w io.Writer) *consoleSink {
	return &consoleSink{w: w, now: time.Now, pct: -1}
}

func (s *consoleSink) Emit(e event.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch e.Event {
	case event.Progress:
		if e.BytesWritten == 0 {
			return
		}
		if e.TotalBytes <= 0 && s.size > 0 {
			e.TotalBytes = s.size
		}
		now := s.now()
		pct := -1
		if e.TotalBytes > 0 {
			pct = int(e.BytesWritten * 100 / e.TotalBytes)
		}
		// Each 10 % step, and otherwise at most every progressEvery.
		if now.Sub(s.last) < progressEvery && (pct < 0 || pct/10 == s.pct/10) {
			return
		}
		s.last, s.pct = now, pct
		fmt.Fprintf(s.w, "bty-live: %s\n", progressLine(e))
	case event.Verified:
		fmt.Fprintf(s.w, "bty-live: read back: the disk holds what was written\n")
	case event.Provisioning:
		if e.Note != "" {
			fmt.Fprintf(s.w, "bty-live: provisioning (%s): %s\n", e.Mode, e.Note)
		} else {
			fmt.Fprintf(s.w, "bty-live: provisioning (%s)\n", e.Mode)
		}
	case event.Output:
		fmt.Fprintf(s.w, "bty-live: %s: %s\n", e.Mode, e.Line)
	case event.Note:
		fmt.Fprintf(s.w, "bty-live: note: %s\n", e.Note)
	}
}

// progressLine is "flash 45% (1.2 GB of 2.1 GB, 85 MB/s, ETA 11s)", or
// without a percentage when the decoded size is not known.
func progressLine(e event.Event) string {
	rate := ""
	if e.Rate > 0 {
		rate = ", " + human.Bytes(int64(e.Rate)) + "/s"
	}
	if e.TotalBytes <= 0 {
		return fmt.Sprintf("flash %s written%s", human.Bytes(e.BytesWritten), rate)
	}
	eta := ""
	if e.Rate > 0 && e.BytesWritten < e.TotalBytes {
		eta = ", ETA " + time.Duration(float64(e.TotalBytes-e.BytesWritten)/e.Rate*float64(time.Second)).Round(time.Second).String()
	}
	return fmt.Sprintf("flash %d%% (%s of %s%s%s)", e.BytesWritten*100/e.TotalBytes,
		human.Bytes(e.BytesWritten), human.Bytes(e.TotalBytes), rate, eta)
}
