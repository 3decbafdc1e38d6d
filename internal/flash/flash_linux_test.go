package flash

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/btyproject/bty/internal/event"
	"github.com/btyproject/bty/internal/fault"
	"github.com/btyproject/bty/internal/imagetest"
	"github.com/btyproject/bty/internal/looptest"
)

// TestRunEveryFormatOnLoop is the engine's end-to-end test: every corpus
// format flashed with Run onto a loop device full of random bytes, read
// back through the device node and compared with the raw reference.
func TestRunEveryFormatOnLoop(t *testing.T) {
	looptest.RequireRoot(t)
	set := imagetest.Corpus(t)
	const extra = 4 << 20
	for _, name := range set.Cases() {
		t.Run(name, func(t *testing.T) {
			dev := looptest.New(t, set.Size+extra)
			tail := dev.ReadAt(t, set.Size, extra)
			var rec event.Recorder
			res, err := Run(context.Background(), Options{Image: set.Files[name], Target: dev.Path,
				Verify: true, SHA256: set.RawSHA256, Sink: &rec})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if got := dev.SHA256(t, set.Size); got != set.RawSHA256 {
				t.Fatalf("device sha256 %s, want %s", got, set.RawSHA256)
			}
			if !bytes.Equal(dev.ReadAt(t, set.Size, extra), tail) {
				t.Error("bytes past the image were changed")
			}
			if !res.Verified || res.TotalBytes != set.Size || res.BytesZeroed == 0 {
				t.Errorf("result %+v", res)
			}
			types := rec.Types()
			want := []event.Type{event.Started, event.Writing, event.Progress, event.Synced, event.Partprobed, event.Verified}
			if len(types) < len(want) || !slices.Equal(types[:len(want)], want) || types[len(types)-1] != event.Done {
				t.Errorf("events %v, want %v ... done", types, want)
			}
			// The host kernel parses no partition tables; a loop device
			// without partscan gets none either: the user is told.
			if !slices.ContainsFunc(res.Notes, func(n string) bool { return strings.Contains(n, "partition nodes") }) {
				t.Errorf("no note about missing partition nodes in %q", res.Notes)
			}
		})
	}
}

func TestRunRefusesMountedTarget(t *testing.T) {
	looptest.RequireRoot(t)
	set := imagetest.Corpus(t)
	dev := looptest.New(t, set.Size+(8<<20))
	mnt := looptest.MountExt4(t, dev.Path)
	_, err := Run(context.Background(), Options{Image: set.Files["raw"], Target: dev.Path})
	if kind := fault.KindOf(err); err == nil || kind != fault.Failed || !strings.Contains(err.Error(), mnt) {
		t.Fatalf("err = %v (kind %v), want a failure naming the mount point %s", err, kind, mnt)
	}
	assertExt4Untouched(t, dev)
}

// assertExt4Untouched checks that no flash began on dev, which holds an
// ext4 filesystem: the first thing a flash does is zero the first MiB,
// where ext4's superblock magic sits. (The mounted filesystem itself
// writes to the device, so a checksum of it would not stay still.)
func assertExt4Untouched(t *testing.T, dev *looptest.Device) {
	t.Helper()
	head := dev.ReadAt(t, 0, 2048)
	if bytes.Equal(head[512:520], []byte("EFI PART")) || head[1080] != 0x53 || head[1081] != 0xef {
		t.Fatal("a refused flash changed the target")
	}
}

func TestRunTooSmallTarget(t *testing.T) {
	looptest.RequireRoot(t)
	set := imagetest.Corpus(t)
	for _, name := range []string{"raw", "gz"} {
		t.Run(name, func(t *testing.T) {
			dev := looptest.New(t, set.Size/2)
			_, err := Run(context.Background(), Options{Image: set.Files[name], Target: dev.Path})
			if kind := fault.KindOf(err); err == nil || kind != fault.Failed || !strings.Contains(err.Error(), "choose a larger disk") {
				t.Fatalf("err = %v (kind %v), want a failure saying the image does not fit", err, kind)
			}
			// gz declares no size: the message must not state how far
			// decoding got as the image's size.
			want := fmt.Sprintf("the image is %s", formatBytes(set.Size))
			if name == "gz" {
				want = "decodes to more than the"
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("err = %v, want it to say %q", err, want)
			}
		})
	}
}

// TestRunOn4KSectors flashes onto a loop device with 4 KiB logical
// sectors and O_DIRECT: the corpus image's size is not a multiple of 4 KiB,
// so its last block is merged with the bytes after it, which must survive.
func TestRunOn4KSectors(t *testing.T) {
	looptest.RequireRoot(t)
	set := imagetest.Corpus(t)
	if set.Size%4096 == 0 {
		t.Fatal("the corpus image must end mid-block for this test")
	}
	for _, name := range []string{"raw", "zst", "qcow2-zlib"} {
		t.Run(name, func(t *testing.T) {
			size := (set.Size+4095)/4096*4096 + 1<<20
			dev := looptest.New(t, size, "--sector-size", "4096")
			tail := dev.ReadAt(t, set.Size, size-set.Size)
			if _, err := Run(context.Background(), Options{Image: set.Files[name], Target: dev.Path, Verify: true}); err != nil {
				t.Fatalf("Run: %v", err)
			}
			if got := dev.SHA256(t, set.Size); got != set.RawSHA256 {
				t.Fatalf("device sha256 %s, want %s", got, set.RawSHA256)
			}
			if !bytes.Equal(dev.ReadAt(t, set.Size, size-set.Size), tail) {
				t.Error("the bytes after the image's last partial block were changed")
			}
		})
	}
}

// TestRunBuffered covers the page-cache write path (the fallback when a
// device refuses O_DIRECT).
func TestRunBuffered(t *testing.T) {
	looptest.RequireRoot(t)
	set := imagetest.Corpus(t)
	dev := looptest.New(t, set.Size)
	if _, err := Run(context.Background(), Options{Image: set.Files["xz"], Target: dev.Path, Buffered: true, Verify: true}); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := dev.SHA256(t, set.Size); got != set.RawSHA256 {
		t.Fatalf("device sha256 %s, want %s", got, set.RawSHA256)
	}
}

// TestRunRefusesQcow2TailPastEOF: a qcow2 whose last run of data has a
// cluster past the end of the file (a normal and a compressed one) used to
// flash with exit 0 and "verified"; it fails with exit 1, before anything
// is written.
func TestRunRefusesQcow2TailPastEOF(t *testing.T) {
	looptest.RequireRoot(t)
	dir := t.TempDir()
	raw := imagetest.TailImage(t, dir, 4<<20+3*512)
	for _, compressed := range []bool{false, true} {
		t.Run(map[bool]string{false: "normal", true: "compressed"}[compressed], func(t *testing.T) {
			p, guest, _ := imagetest.Qcow2TailPastEOF(t, t.TempDir(), raw, compressed)
			dev := looptest.New(t, 8<<20)
			before := dev.SHA256(t, dev.Size)
			var rec event.Recorder
			res, err := Run(context.Background(), Options{Image: p, Target: dev.Path, Verify: true, Sink: &rec})
			if kind := fault.KindOf(err); err == nil || kind != fault.Failed || !strings.Contains(err.Error(), fmt.Sprintf("guest offset %d", guest)) {
				t.Fatalf("err = %v (kind %v), want a failure naming guest offset %d", err, kind, guest)
			}
			if res.Verified || slices.Contains(rec.Types(), event.Verified) {
				t.Error("a corrupt image was reported verified")
			}
			if after := dev.SHA256(t, dev.Size); after != before {
				t.Error("the refused image changed the target")
			}
		})
	}
}

// TestRunEmptyImage: an image that decodes to nothing is refused and
// leaves the target as it was, whether its size is declared (xz, a raw
// file) or only found by decoding (gzip, which used to zero the first MiB
// and report success).
func TestRunEmptyImage(t *testing.T) {
	looptest.RequireRoot(t)
	imagetest.RequireTools(t, "gzip", "xz")
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.img")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	imagetest.Run(t, dir, "gzip", "-k", empty)
	imagetest.Run(t, dir, "xz", "-k", empty)
	for _, p := range []string{empty + ".gz", empty + ".xz"} {
		t.Run(filepath.Ext(p), func(t *testing.T) {
			dev := looptest.New(t, 4<<20)
			before := dev.SHA256(t, dev.Size)
			_, err := Run(context.Background(), Options{Image: p, Target: dev.Path})
			if kind := fault.KindOf(err); err == nil || kind != fault.Failed || !strings.Contains(err.Error(), "decodes to 0 bytes") {
				t.Fatalf("err = %v (kind %v), want a failure: decodes to 0 bytes", err, kind)
			}
			if dev.SHA256(t, dev.Size) != before {
				t.Error("the target changed")
			}
		})
	}
}
