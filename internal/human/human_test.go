package human

import (
	"testing"
	"time"
)

func TestBytes(t *testing.T) {
	for _, c := range []struct {
		n    int64
		want string
	}{
		{-1, "0 B"}, {0, "0 B"}, {512, "512 B"}, {1536, "1.5 KiB"},
		{58 << 20, "58 MiB"}, {3<<30 + 1<<29, "3.5 GiB"}, {1000 << 20, "1000 MiB"},
	} {
		if got := Bytes(c.n); got != c.want {
			t.Errorf("Bytes(%d) = %q, want %q", c.n, got, c.want)
		}
	}
	if got := BytesOr(-1, "-"); got != "-" {
		t.Errorf("BytesOr(-1) = %q, want -", got)
	}
	if got := BytesOr(0, "-"); got != "0 B" {
		t.Errorf("BytesOr(0) = %q, want 0 B", got)
	}
	if got := BytesOr(1<<20, "-"); got != "1.0 MiB" {
		t.Errorf("BytesOr(1 MiB) = %q, want 1.0 MiB", got)
	}
}

func TestDuration(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0:00"}, {1499 * time.Millisecond, "0:01"}, {1500 * time.Millisecond, "0:02"},
		{59*time.Minute + 59*time.Second, "59:59"}, {time.Hour + 2*time.Minute + 3*time.Second, "1:02:03"},
		{27 * time.Hour, "27:00:00"},
	} {
		if got := Duration(c.d); got != c.want {
			t.Errorf("Duration(%v) = %q, want %q", c.d, got, c.want)
		}
	}
}
