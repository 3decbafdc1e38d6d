package image

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/btyproject/bty/internal/imagetest"
)

// TestForeignFormats: disk images of other hypervisors, compressors and
// archives bty does not decode used to be "raw" and were flashed as they
// are, exit 0. Each is refused by its magic (or footer), naming the
// format and the command that makes an image bty reads; that command,
// run, gives an image that decodes to the same bytes as the original.
func TestForeignFormats(t *testing.T) {
	imagetest.RequireTools(t, "qemu-img")
	dir := t.TempDir()
	raw := imagetest.TailImage(t, dir, 4<<20)
	want := imagetest.SHA256(t, raw, 0, -1)
	qemu := []struct {
		name, format string
		opts         []string
	}{
		{"sparse.vmdk", "vmdk", nil},
		{"appliance.vmdk", "vmdk", []string{"-o", "subformat=streamOptimized"}},
		{"descriptor.vmdk", "vmdk", []string{"-o", "subformat=monolithicFlat"}},
		// force_size: keep the size exact (not rounded to a CHS geometry).
		{"dynamic.vhd", "vpc", []string{"-o", "force_size=on"}},
		{"fixed.vhd", "vpc", []string{"-o", "subformat=fixed,force_size=on"}},
		{"disk.vhdx", "vhdx", nil},
		{"disk.vdi", "vdi", nil},
		{"disk.qed", "qed", nil},
		{"disk.hdd", "parallels", nil},
		{"named.img", "vmdk", nil}, // a name that says raw changes nothing
	}
	hintRE := regexp.MustCompile(`qemu-img convert -f (\S+) -O qcow2 (\S+) (\S+\.qcow2)`)
	for _, q := range qemu {
		t.Run(q.name, func(t *testing.T) {
			d := t.TempDir()
			p := filepath.Join(d, q.name)
			imagetest.Run(t, d, "qemu-img", append(append([]string{"convert", "-O", q.format}, q.opts...), raw, p)...)
			err := decodeAll(t, p)
			if !errors.Is(err, ErrUnsupported) {
				t.Fatalf("error %v, want ErrUnsupported", err)
			}
			m := hintRE.FindStringSubmatch(err.Error())
			if m == nil || m[1] != q.format {
				t.Fatalf("error %q gives no qemu-img convert -f %s command", err, q.format)
			}
			info, err := Inspect(context.Background(), openLocal(t, p))
			if err == nil || info.Format != Format(q.format) {
				t.Errorf("Inspect: format %q, error %v; want %q and an error", info.Format, err, q.format)
			}
			// The command the message gives makes a qcow2 bty decodes
			// to the original bytes.
			imagetest.Run(t, d, "qemu-img", "convert", "-f", m[1], "-O", "qcow2", m[2], m[3])
			img, err := openQcowFile(t, openLocal(t, filepath.Join(d, m[3])))
			if err != nil {
				t.Fatal(err)
			}
			if got, err := readImage(img); err != nil || got != want {
				t.Errorf("the converted image decodes to %s (%v), want %s", got, err, want)
			}
		})
	}
	t.Run("flat extent", func(t *testing.T) {
		// A monolithicFlat VMDK's data file is raw: it is flashed as raw.
		d := t.TempDir()
		imagetest.Run(t, d, "qemu-img", "convert", "-O", "vmdk", "-o", "subformat=monolithicFlat", raw, filepath.Join(d, "x.vmdk"))
		img, err := Open(context.Background(), openLocal(t, filepath.Join(d, "x-flat.vmdk")), Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer img.Close()
		if got, err := readImage(img.(RandomAccess)); err != nil || got != want || img.Format() != Raw {
			t.Errorf("flat extent: %s %s (%v), want raw %s", img.Format(), got, err, want)
		}
	})

	// Formats qemu-img cannot write: their headers, on raw bytes.
	data, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	withHead := func(head string) []byte { return append([]byte(head), data...) }
	tarHead := make([]byte, 512)
	copy(tarHead, "disk.vmdk")
	copy(tarHead[257:], "ustar\x0000")
	lzma := data
	if _, err := exec.LookPath("xz"); err == nil {
		cmd := exec.Command("xz", "--format=lzma", "-c")
		cmd.Stdin = bytes.NewReader(data)
		if lzma, err = cmd.Output(); err != nil {
			t.Fatal(err)
		}
	}
	koly := make([]byte, 512)
	copy(koly, "koly")
	vhdFooter := make([]byte, 512)
	copy(vhdFooter, "conectix")
	others := []struct {
		name   string
		b      []byte
		format Format
		want   string
	}{
		{"disk.bochs", withHead("Bochs Virtual HD Image\x00"), Bochs, "qemu-img convert -f bochs"},
		{"disk.cloop", withHead("#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n"), Cloop, "qemu-img convert -f cloop"},
		{"disk.dmg", append(bytes.Clone(data), koly...), DMG, "qemu-img convert -f dmg"},
		{"footer.vhd", append(bytes.Clone(data), vhdFooter...), VHD, "qemu-img convert -f vpc"},
		{"disk.img.lz", withHead("LZIP\x01\x0c"), Lzip, "lzip -dc disk.img.lz"},
		{"disk.img.lz4", withHead("\x04\x22\x4d\x18\x64\x40\xa7"), LZ4, "lz4 -dc disk.img.lz4"},
		{"disk.7z", withHead("7z\xbc\xaf\x27\x1c\x00\x04"), SevenZip, "7z x disk.7z"},
		{"disk.zip", withHead("PK\x03\x04\x14\x00"), Zip, "unzip disk.zip"},
		{"appliance.ova", append(tarHead, data...), Tar, "tar -xf appliance.ova"},
		{"disk.img.lzma", lzma, LZMA, "xz -dc --format=lzma disk.img.lzma"},
	}
	for _, o := range others {
		t.Run(o.name, func(t *testing.T) {
			if o.format == LZMA && bytes.Equal(lzma, data) {
				t.Skip("needs xz on PATH")
			}
			p := filepath.Join(t.TempDir(), o.name)
			if err := os.WriteFile(p, o.b, 0o644); err != nil {
				t.Fatal(err)
			}
			err := decodeAll(t, p)
			if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), o.want) {
				t.Fatalf("error %v, want ErrUnsupported saying %q", err, o.want)
			}
			if info, _ := Inspect(context.Background(), openLocal(t, p)); info.Format != o.format {
				t.Errorf("Inspect: format %q, want %q", info.Format, o.format)
			}
		})
	}

	// The catalog lists them, with the reason, instead of hiding them.
	root := t.TempDir()
	imagetest.Run(t, root, "qemu-img", "convert", "-O", "vmdk", raw, filepath.Join(root, "disk.vmdk"))
	list, err := List(root)
	if err != nil || len(list) != 1 || list[0].Format != VMDK || !strings.Contains(list[0].Error, "qemu-img convert") {
		t.Errorf("List = %+v, %v; want the VMDK with its reason", list, err)
	}
}
