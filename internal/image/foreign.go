package image

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"path/filepath"
	"strings"
)

// Formats bty recognises only to refuse them: virtual disk formats of
// other hypervisors, compressors and archives it does not decode. Without
// this they had no magic bty knew, so they were "raw" and flashed as they
// are: a VMDK's sparse extent headers or a VHD's footer on the disk,
// exit 0.
const (
	VMDK      Format = "vmdk"
	VHD       Format = "vpc"
	VHDX      Format = "vhdx"
	VDI       Format = "vdi"
	QED       Format = "qed"
	Parallels Format = "parallels"
	Bochs     Format = "bochs"
	Cloop     Format = "cloop"
	DMG       Format = "dmg"
	Lzip      Format = "lzip"
	LZ4       Format = "lz4"
	LZMA      Format = "lzma"
	SevenZip  Format = "7z"
	Zip       Format = "zip"
	Tar       Format = "tar"
)

// foreign describes a format bty refuses.
type foreign struct {
	format Format
	name   string // what people call it
	// qemu is set for the formats qemu-img reads (its driver name is
	// the Format); else fix is how to make an image bty reads, with %s
	// for the file's base name.
	qemu bool
	fix  string
}

var foreigns = map[Format]foreign{
	VMDK:      {VMDK, "a VMDK (VMware) disk image", true, ""},
	VHD:       {VHD, "a VHD (Virtual PC, Hyper-V, Azure) disk image", true, ""},
	VHDX:      {VHDX, "a VHDX (Hyper-V) disk image", true, ""},
	VDI:       {VDI, "a VDI (VirtualBox) disk image", true, ""},
	QED:       {QED, "a QED disk image", true, ""},
	Parallels: {Parallels, "a Parallels disk image", true, ""},
	Bochs:     {Bochs, "a Bochs disk image", true, ""},
	Cloop:     {Cloop, "a cloop compressed image", true, ""},
	DMG:       {DMG, "an Apple disk image (DMG)", true, ""},
	Lzip:      {Lzip, "lzip-compressed", false, "lzip -dc %s | zstd -T0 -o NEW.img.zst"},
	LZ4:       {LZ4, "LZ4-compressed", false, "lz4 -dc %s | zstd -T0 -o NEW.img.zst"},
	LZMA:      {LZMA, "legacy LZMA-compressed (.lzma)", false, "xz -dc --format=lzma %s | xz -T0 > NEW.img.xz"},
	SevenZip:  {SevenZip, "a 7-Zip archive", false, "unpack it (7z x %s) and use the disk image inside"},
	Zip:       {Zip, "a ZIP archive", false, "unpack it (unzip %s) and use the disk image inside"},
	Tar:       {Tar, "a tar archive (an OVA appliance is one)", false, "unpack it (tar -xf %s) and convert the disk image inside (for a VMDK: qemu-img convert -O qcow2 DISK.vmdk NEW.qcow2)"},
}

// detectForeign recognises a foreign format by the magic at the start of
// head or, when tail (the file's last 512 bytes) is given, by a footer.
// It returns "" for anything else.
func detectForeign(head, tail []byte, name string) Format {
	at := func(off int, magic string) bool {
		return len(head) >= off+len(magic) && string(head[off:off+len(magic)]) == magic
	}
	switch {
	case at(0, "KDMV"), at(0, "COWD"), at(0, "# Disk DescriptorFile"):
		return VMDK
	case at(0, "conectix"):
		return VHD
	case at(0, "vhdxfile"):
		return VHDX
	case at(0x40, "\x7f\x10\xda\xbe"), at(0, "<<< Oracle VM VirtualBox Disk Image >>>"), at(0, "<<< Sun xVM VirtualBox Disk Image >>>"):
		return VDI
	case at(0, "QED\x00"):
		return QED
	case at(0, "WithoutFreeSpace"), at(0, "WithouFreSpacExt"):
		return Parallels
	case at(0, "Bochs Virtual HD Image"):
		return Bochs
	case at(0, "#!/bin/sh\n#V2.0 Format\n"):
		return Cloop
	case at(0, "LZIP"):
		return Lzip
	case at(0, "\x04\x22\x4d\x18"):
		return LZ4
	case at(0, "7z\xbc\xaf\x27\x1c"):
		return SevenZip
	case at(0, "PK\x03\x04"), at(0, "PK\x05\x06"):
		return Zip
	case at(257, "ustar"):
		return Tar
	case len(tail) == 512 && bytes.HasPrefix(tail, []byte("conectix")):
		return VHD // a fixed VHD: raw data, then a 512-byte footer
	case len(tail) == 512 && bytes.HasPrefix(tail[1:], []byte("conectix")):
		return VHD // older tools wrote a 511-byte footer
	case len(tail) == 512 && bytes.HasPrefix(tail, []byte("koly")):
		return DMG
	}
	// The legacy .lzma header has no magic: trust the name when the
	// header is plausible (properties below 225, a dictionary of at
	// least 4 KiB).
	if strings.HasSuffix(strings.ToLower(name), ".lzma") && len(head) >= 13 && head[0] < 225 &&
		binary.LittleEndian.Uint32(head[1:5]) >= 4096 {
		return LZMA
	}
	return ""
}

// readTail returns the last 512 bytes of ra (size bytes long), or nil.
func readTail(ra io.ReaderAt, size int64) []byte {
	if ra == nil || size < 1024 {
		return nil
	}
	b := make([]byte, 512)
	if err := ReadFullAt(ra, b, size-512); err != nil {
		return nil
	}
	return b
}

// foreignError is the error for an image in a foreign format.
func foreignError(name string, f Format) error {
	fo := foreigns[f]
	base := filepath.Base(name)
	var fix string
	if fo.qemu {
		fix = fmt.Sprintf("convert it first: qemu-img convert -f %s -O qcow2 %s %s.qcow2 (or -O raw)",
			fo.format, base, strings.TrimSuffix(base, filepath.Ext(base)))
	} else {
		fix = fmt.Sprintf(fo.fix, base)
	}
	return &formatError{kind: ErrUnsupported, msg: fmt.Sprintf("%s is %s, which bty does not decode (it would be written as raw bytes): %s", base, fo.name, fix)}
}
