package media

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/diskfs/go-diskfs/partition/gpt"
	"golang.org/x/sys/unix"
)

// Partition is one partition of a disk image made by WriteGPTDisk.
type Partition struct {
	Name  string // GPT partition name ("BTY_LIVE")
	Type  string // "esp", "linux" or "basicdata"
	Size  int64  // bytes, rounded up to MiB; 0 on the last partition: the rest of the disk
	Image string // host file whose bytes go at the partition's start; "" for none
	// LegacyBoot sets the GPT attribute "legacy BIOS bootable" (bit 2),
	// which SYSLINUX's GPT MBR code looks for.
	LegacyBoot bool
}

// legacyBIOSBootable is GPT partition attribute bit 2 (UEFI spec 5.3.3).
const legacyBIOSBootable = 1 << 2

const mib = 1 << 20

var partTypes = map[string]gpt.Type{
	"esp":       gpt.EFISystemPartition,
	"linux":     gpt.LinuxFilesystem,
	"basicdata": gpt.MicrosoftBasicData,
}

// WriteGPTDisk creates path as a sparse file of size bytes holding a GPT
// (protective MBR, primary and backup) with parts one after the other
// from 1 MiB, each aligned to 1 MiB, then copies each partition's Image at
// its offset (only its data: holes stay holes). bootCode, when not nil,
// goes into the protective MBR's boot code area (at most 440 bytes) for
// legacy BIOS boot.
func WriteGPTDisk(path string, size int64, parts []Partition, bootCode []byte) error {
	if len(bootCode) > 440 {
		return fmt.Errorf("MBR boot code of %d bytes: at most 440 fit before the disk signature", len(bootCode))
	}
	layout, err := planGPT(size, parts)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("creating the disk image: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(path)
		}
	}()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("sizing the disk image %s: %w (is there room on its filesystem?)", path, err)
	}
	table := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true}
	for i, p := range parts {
		gp := &gpt.Partition{
			Index: i + 1,
			Start: uint64(layout[i].start / 512),
			Size:  uint64(layout[i].size),
			Type:  partTypes[p.Type],
			Name:  p.Name,
		}
		if p.LegacyBoot {
			gp.Attributes |= legacyBIOSBootable
		}
		table.Partitions = append(table.Partitions, gp)
	}
	if err := table.Write(f, size); err != nil {
		return fmt.Errorf("writing the partition table of %s: %w", path, err)
	}
	if len(bootCode) > 0 {
		if _, err := f.WriteAt(bootCode, 0); err != nil {
			return fmt.Errorf("writing the MBR boot code of %s: %w", path, err)
		}
	}
	for i, p := range parts {
		if p.Image == "" {
			continue
		}
		if err := copySparse(f, layout[i].start, p.Image); err != nil {
			return fmt.Errorf("copying partition %s into the disk image: %w", p.Name, err)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("writing the disk image: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing the disk image: %w", err)
	}
	ok = true
	return nil
}

type extent struct{ start, size int64 }

// planGPT places the partitions: from 1 MiB, MiB-aligned, the last MiB
// left to the backup GPT.
func planGPT(size int64, parts []Partition) ([]extent, error) {
	if len(parts) == 0 {
		return nil, errors.New("a disk image needs at least one partition")
	}
	if size%512 != 0 {
		return nil, fmt.Errorf("disk image size %d is not a multiple of 512 bytes", size)
	}
	// The backup GPT takes the last 33 sectors; keep the last MiB free.
	end := (size - 33*512) / mib * mib
	off := int64(mib)
	out := make([]extent, len(parts))
	for i, p := range parts {
		if _, ok := partTypes[p.Type]; !ok {
			return nil, fmt.Errorf("partition %s: type %q is not one of esp, linux, basicdata", p.Name, p.Type)
		}
		if len(p.Name) > 36 {
			return nil, fmt.Errorf("partition name %q is longer than GPT's 36 characters", p.Name)
		}
		sz := (p.Size + mib - 1) / mib * mib
		if p.Size == 0 {
			if i != len(parts)-1 {
				return nil, fmt.Errorf("partition %s has size 0: only the last partition may take the rest of the disk", p.Name)
			}
			sz = end - off
		}
		if sz <= 0 || off+sz > end {
			return nil, fmt.Errorf("partitions do not fit in a %d-byte disk image: partition %s would end at %d, past %d", size, p.Name, off+sz, end)
		}
		if p.Image != "" {
			st, err := os.Stat(p.Image)
			if err != nil {
				return nil, fmt.Errorf("partition %s: %w", p.Name, err)
			}
			if st.Size() > sz {
				return nil, fmt.Errorf("partition %s holds %d bytes but its image %s is %d bytes", p.Name, sz, p.Image, st.Size())
			}
		}
		out[i] = extent{off, sz}
		off += sz
	}
	return out, nil
}

// copySparse copies the data regions of src into dst at off, skipping
// holes (SEEK_DATA/SEEK_HOLE) and all-zero blocks, so a sparse
// filesystem image stays sparse inside the disk image.
func copySparse(dst *os.File, off int64, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	buf := make([]byte, mib)
	zero := make([]byte, mib)
	pos := int64(0)
	for pos < size {
		data, err := unix.Seek(int(f.Fd()), pos, unix.SEEK_DATA)
		if err != nil {
			if errors.Is(err, unix.ENXIO) {
				return nil // only a hole is left
			}
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
				data = pos // no hole support: copy everything
			} else {
				return err
			}
		}
		hole, err := unix.Seek(int(f.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			hole = size
		}
		for p := data; p < hole; {
			n := min(int64(len(buf)), hole-p)
			if _, err := f.ReadAt(buf[:n], p); err != nil && err != io.EOF {
				return err
			}
			if !bytes.Equal(buf[:n], zero[:n]) {
				if _, err := dst.WriteAt(buf[:n], off+p); err != nil {
					return err
				}
			}
			p += n
		}
		pos = hole
	}
	return nil
}
