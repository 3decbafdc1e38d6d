// Package human writes sizes and durations the way every bty surface
// shows them to people: the CLI, the TUI, bty-ctl, bty-web's pages, the
// live env and bty-media.
package human

import (
	"fmt"
	"time"

	"github.com/dustin/go-humanize"
)

// Bytes is n in binary units as go-humanize writes them: "512 B",
// "1.5 GiB", "58 MiB". A negative n counts as 0.
func Bytes(n int64) string { return humanize.IBytes(uint64(max(n, 0))) }

// BytesOr is Bytes(n), or unknown when n is negative (a size that is not
// known, such as a stream's decoded size).
func BytesOr(n int64, unknown string) string {
	if n < 0 {
		return unknown
	}
	return Bytes(n)
}

// Duration is d rounded to the second as "m:ss", or "h:mm:ss" from an
// hour on.
func Duration(d time.Duration) string {
	d = d.Round(time.Second)
	h, m, sec := int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60
	if h > 0 {
		return fmt.Sprintf("%d:%02d:%02d", h, m, sec)
	}
	return fmt.Sprintf("%d:%02d", m, sec)
}
