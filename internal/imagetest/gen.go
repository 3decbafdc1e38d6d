package imagetest

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
)

// words is the vocabulary of the compressible "text" regions: log lines,
// config files and ELF string tables compress roughly like this.
var words = []string{
	"the", "kernel", "module", "systemd", "unit", "service", "boot", "disk",
	"partition", "mount", "/usr/lib/x86_64-linux-gnu", "libc.so.6", "error",
	"warning", "info", "debug", "0x7f3a", "return", "static", "const", "int",
	"struct", "void", "include", "define", "package", "import", "func",
	"firmware", "network", "interface", "address", "eth0", "nvme0n1",
	"=", "{", "}", "(", ")", ";", "\n", "\n\t", "  ", "#", "//", "ext4",
}

// filler writes deterministic data of three kinds.
type filler struct {
	rng *rand.Rand
	buf bytes.Buffer
}

func newFiller(seed uint64) *filler {
	return &filler{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// random returns n incompressible bytes.
func (f *filler) random(n int) []byte {
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := f.rng.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(f.rng.Uint32())
	}
	return b
}

// text returns n bytes of compressible word soup.
func (f *filler) text(n int) []byte {
	f.buf.Reset()
	for f.buf.Len() < n {
		w := words[f.rng.IntN(len(words))]
		f.buf.WriteString(w)
		if f.rng.IntN(4) == 0 {
			fmt.Fprintf(&f.buf, "%d", f.rng.IntN(100000))
		}
		f.buf.WriteByte(' ')
	}
	return append([]byte(nil), f.buf.Bytes()[:n]...)
}

// WriteMixed writes size bytes of realistic, deterministic disk-like content
// to w: 1 MiB chunks cycling through incompressible data (~25 %), text-like
// compressible data (~35 %), zeros (~30 %) and 4 KiB interleaved
// random/zero blocks (~10 %). It is what benchmarks decode.
func WriteMixed(w io.Writer, size int64, seed uint64) error {
	f := newFiller(seed)
	const chunk = 1 << 20
	zero := make([]byte, chunk)
	for off := int64(0); off < size; off += chunk {
		n := int64(chunk)
		if size-off < n {
			n = size - off
		}
		var b []byte
		switch k := f.rng.IntN(20); {
		case k < 5:
			b = f.random(int(n))
		case k < 12:
			b = f.text(int(n))
		case k < 18:
			b = zero[:n]
		default:
			b = make([]byte, n)
			for i := int64(0); i < n; i += 8192 {
				copy(b[i:min(i+4096, n)], f.random(4096))
			}
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// region of the reference image.
type region struct {
	off, len int64
	kind     byte // 'r' random, 't' text, 'z' written zeros, 'm' mixed 4K random/zero
}

// RefSize is the virtual size of the reference image: 48 MiB plus 7
// sectors, so it is a multiple of 512 but neither of 1 MiB nor of a qcow2
// cluster.
const RefSize = 48<<20 + 7*512

const (
	kib = 1 << 10
	mib = 1 << 20
)

// refRegions are the written parts of the reference image; everything else
// is a hole (sparse). The GPT (first 34 and last 33 sectors) is written by
// sgdisk afterwards.
var refRegions = []region{
	{1 * mib, 4 * mib, 'r'},
	{5 * mib, 1 * mib, 'z'},              // zeros written inside data
	{6 * mib, 3 * mib, 't'},              // compressible
	{9*mib + 512*kib, 512 * kib, 'r'},    // after a 512 KiB hole
	{20 * mib, 4 * mib, 'm'},             // 4 KiB random/zero interleave
	{24*mib + 4*kib + 512, 3 * kib, 't'}, // odd, sector-aligned, inside a hole
	{40 * mib, 4 * mib, 't'},
	{44 * mib, 256 * kib, 'z'},
	{44*mib + 256*kib, 2 * mib, 'r'},
	{RefSize - 33*512 - 200*kib, 200 * kib, 'r'}, // data up to the backup GPT
}

// writeReference creates the sparse reference raw image at path.
func writeReference(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(RefSize); err != nil {
		return err
	}
	fl := newFiller(48)
	for _, r := range refRegions {
		var b []byte
		switch r.kind {
		case 'r':
			b = fl.random(int(r.len))
		case 't':
			b = fl.text(int(r.len))
		case 'z':
			b = make([]byte, r.len)
		case 'm':
			b = make([]byte, r.len)
			for i := int64(0); i < r.len; i += 8 * kib {
				copy(b[i:i+4*kib], fl.random(4*kib))
			}
		}
		if _, err := f.WriteAt(b, r.off); err != nil {
			return err
		}
	}
	return f.Close()
}
