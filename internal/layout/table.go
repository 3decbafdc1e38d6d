// Package layout reads how a disk (or a disk image) is laid out: its GPT
// or MBR partition table and the filesystem each partition holds, as far
// as magic numbers tell. The flash engine reads an image's layout to plan
// provisioning; provisioning reads the flashed disk's to act on it.
package layout

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"time"

	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/diskfs/go-diskfs/partition/mbr"
)

// Table is a disk's partition table as bty reads it.
type Table struct {
	// Scheme is "gpt", "mbr" or "none" (a filesystem on the whole disk,
	// or nothing recognisable).
	Scheme     string      `json:"scheme"`
	SectorSize int         `json:"sector_size"`
	Partitions []Partition `json:"partitions"`
}

// Partition is one entry of a partition table (or the whole disk when the
// disk has no table), with the filesystem found in it when known.
type Partition struct {
	// Number is the partition number the kernel gives it (sda2 is 2);
	// 0 stands for the whole disk.
	Number int   `json:"number"`
	Start  int64 `json:"start_bytes"`
	Size   int64 `json:"size_bytes"`
	// Type is the GPT type name or the MBR type byte ("0x83").
	Type  string `json:"type,omitempty"`
	Label string `json:"label,omitempty"`
	UUID  string `json:"uuid,omitempty"`
	// Filesystem is what the partition's first bytes say ("ext4", "xfs",
	// "btrfs", "vfat", "swap", "LVM2_member", "crypto_LUKS", ...), or ""
	// when unknown or not probed.
	Filesystem string `json:"filesystem,omitempty"`
}

// Name is how messages name the partition.
func (p Partition) Name() string {
	if p.Number == 0 {
		return "the whole disk"
	}
	return fmt.Sprintf("partition %d", p.Number)
}

// ErrNoTable is returned by ReadTable when the disk has neither a GPT nor
// an MBR partition table.
var ErrNoTable = errors.New("no partition table")

// ReadTable parses the GPT or MBR partition table of a disk of size bytes
// read through r. sectorSize is the disk's logical block size; for images
// (whose sector size is not known) pass 0 to try 512 and then 4096.
// Partitions are returned in number order, empty entries and MBR
// extended containers left out. Filesystems are not probed (see Probe).
func ReadTable(r io.ReaderAt, size int64, sectorSize int) (*Table, error) {
	sizes := []int{sectorSize}
	if sectorSize == 0 {
		sizes = []int{512, 4096}
	}
	f := &readerFile{r: r, size: size}
	var gptErr error
	for _, ss := range sizes {
		head := make([]byte, 2*ss)
		if _, err := r.ReadAt(head, 0); err != nil {
			if errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("%w: the disk is only %d bytes", ErrNoTable, size)
			}
			return nil, fmt.Errorf("reading the partition table: %w", err)
		}
		if string(head[ss:ss+8]) != "EFI PART" {
			continue
		}
		t, err := gpt.Read(f, ss, ss)
		if err != nil {
			gptErr = err
			continue
		}
		return fromGPT(t, ss), nil
	}
	if gptErr != nil {
		return nil, fmt.Errorf("the disk's GPT is damaged (%v); bty will not guess its partitions: check the image (sgdisk -v)", gptErr)
	}
	t, err := mbr.Read(f, 512, 512)
	if err != nil {
		return nil, ErrNoTable
	}
	return fromMBR(r, t, size)
}

func fromGPT(t *gpt.Table, ss int) *Table {
	out := &Table{Scheme: "gpt", SectorSize: ss, Partitions: []Partition{}}
	for _, p := range t.Partitions {
		if p.Type == gpt.Unused {
			continue
		}
		out.Partitions = append(out.Partitions, Partition{
			Number: p.Index,
			Start:  int64(p.Start) * int64(ss),
			Size:   int64(p.End-p.Start+1) * int64(ss),
			Type:   gptTypeName(p.Type),
			Label:  p.Name,
			UUID:   strings.ToLower(p.GUID),
		})
	}
	return out
}

// Well-known GPT partition types, by the names messages use.
var gptTypeNames = map[gpt.Type]string{
	gpt.EFISystemPartition: "EFI system",
	gpt.BIOSBoot:           "BIOS boot",
	gpt.LinuxFilesystem:    "Linux filesystem",
	gpt.LinuxSwap:          "Linux swap",
	gpt.LinuxLVM:           "Linux LVM",
	gpt.LinuxRAID:          "Linux RAID",
	gpt.LinuxRootX86_64:    "Linux root (x86-64)",
	gpt.LinuxRootArm64:     "Linux root (ARM64)",
	gpt.LinuxHome:          "Linux home",
	gpt.LinuxExtendedBoot:  "Linux extended boot",
	gpt.MicrosoftBasicData: "Microsoft basic data",
	gpt.LinuxLUKS:          "Linux LUKS",
	gpt.LinuxDMCrypt:       "Linux dm-crypt",
}

func gptTypeName(t gpt.Type) string {
	if n, ok := gptTypeNames[gpt.Type(strings.ToUpper(string(t)))]; ok {
		return n
	}
	return strings.ToLower(string(t))
}

// MBR partition types with a meaning here.
const (
	mbrEmpty       = 0x00
	mbrExtendedCHS = 0x05
	mbrExtendedLBA = 0x0f
	mbrExtendedLin = 0x85
	mbrProtective  = 0xee
)

func isExtended(t mbr.Type) bool {
	return t == mbrExtendedCHS || t == mbrExtendedLBA || t == mbrExtendedLin
}

func fromMBR(r io.ReaderAt, t *mbr.Table, size int64) (*Table, error) {
	out := &Table{Scheme: "mbr", SectorSize: 512, Partitions: []Partition{}}
	for _, p := range t.Partitions {
		switch {
		case p.Type == mbrEmpty:
			continue
		case p.Type == mbrProtective:
			return nil, errors.New("the disk has a protective MBR but no readable GPT; bty will not guess its partitions: check the image (sgdisk -v)")
		case isExtended(p.Type):
			logical, err := readLogical(r, int64(p.Start), size)
			if err != nil {
				return nil, err
			}
			out.Partitions = append(out.Partitions, logical...)
			continue
		}
		out.Partitions = append(out.Partitions, Partition{
			Number: p.Index,
			Start:  int64(p.Start) * 512,
			Size:   int64(p.Size) * 512,
			Type:   fmt.Sprintf("0x%02x", uint8(p.Type)),
			UUID:   p.UUID(),
		})
	}
	return out, nil
}

// readLogical walks the chain of extended boot records that starts at
// sector ext, numbering logical partitions from 5 as Linux does.
// go-diskfs reads primary MBR entries only; this walk is hand-written.
func readLogical(r io.ReaderAt, ext, size int64) ([]Partition, error) {
	var parts []Partition
	ebr := ext
	seen := map[int64]bool{}
	for n := 5; ; n++ {
		if seen[ebr] || len(parts) > 256 {
			return nil, fmt.Errorf("the MBR's chain of logical partitions loops at sector %d; check the image (sfdisk -V)", ebr)
		}
		seen[ebr] = true
		b := make([]byte, 512)
		if _, err := r.ReadAt(b, ebr*512); err != nil {
			return nil, fmt.Errorf("reading the extended boot record at sector %d: %w", ebr, err)
		}
		if b[510] != 0x55 || b[511] != 0xaa {
			return nil, fmt.Errorf("the extended boot record at sector %d has no signature; check the image (sfdisk -V)", ebr)
		}
		e1, e2 := b[446:462], b[462:478]
		if typ := e1[4]; typ != mbrEmpty {
			start := ebr + int64(binary.LittleEndian.Uint32(e1[8:12]))
			sectors := int64(binary.LittleEndian.Uint32(e1[12:16]))
			if (start+sectors)*512 > size {
				return nil, fmt.Errorf("logical partition %d ends past the disk's end; check the image (sfdisk -V)", n)
			}
			parts = append(parts, Partition{Number: n, Start: start * 512, Size: sectors * 512,
				Type: fmt.Sprintf("0x%02x", typ)})
		}
		if !isExtended(mbr.Type(e2[4])) {
			return parts, nil
		}
		ebr = ext + int64(binary.LittleEndian.Uint32(e2[8:12]))
	}
}

// readerFile adapts an io.ReaderAt of known size to the file interface
// go-diskfs reads tables through.
type readerFile struct {
	r    io.ReaderAt
	size int64
	off  int64
}

func (f *readerFile) ReadAt(p []byte, off int64) (int, error) { return f.r.ReadAt(p, off) }
func (f *readerFile) Read(p []byte) (int, error) {
	n, err := f.r.ReadAt(p, f.off)
	f.off += int64(n)
	return n, err
}
func (f *readerFile) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
		f.off = off
	case io.SeekCurrent:
		f.off += off
	case io.SeekEnd:
		f.off = f.size + off
	}
	return f.off, nil
}
func (f *readerFile) Close() error               { return nil }
func (f *readerFile) Stat() (fs.FileInfo, error) { return sizeInfo(f.size), nil }

type sizeInfo int64

func (s sizeInfo) Name() string       { return "disk" }
func (s sizeInfo) Size() int64        { return int64(s) }
func (s sizeInfo) Mode() fs.FileMode  { return 0 }
func (s sizeInfo) ModTime() time.Time { return time.Time{} }
func (s sizeInfo) IsDir() bool        { return false }
func (s sizeInfo) Sys() any           { return nil }

// Largest is the largest partition of t (the first of equals), nil for
// an empty table.
func (t *Table) Largest() *Partition {
	var l *Partition
	for i := range t.Partitions {
		if p := &t.Partitions[i]; l == nil || p.Size > l.Size {
			l = p
		}
	}
	return l
}

// HeadScheme names the partition table whose signature the first bytes
// of a disk carry, without parsing it: "gpt" (a GPT header at 512),
// "mbr" (a boot signature at 510) or "".
func HeadScheme(head []byte) string {
	if len(head) >= 520 && bytes.Equal(head[512:520], []byte("EFI PART")) {
		return "gpt"
	}
	if len(head) >= 512 && head[510] == 0x55 && head[511] == 0xaa {
		return "mbr"
	}
	return ""
}
