package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
)

// The qcow2 header and its tables are checked the way qemu's qcow2 driver
// checks them when it opens an image (block/qcow2.c, qcow2_do_open and
// qcow2_validate_table), plus bounds against the file's size: a sealed
// image has no business pointing past its own end, where qemu would read
// zeros. The format is qemu's docs/interop/qcow2.txt.

// Limits qemu enforces (block/qcow2.h).
const (
	qcowMinClusterBits   = 9
	qcowMaxClusterBits   = 21
	qcowMaxL1Bytes       = 32 << 20 // QCOW_MAX_L1_SIZE
	qcowMaxRefTableBytes = 8 << 20  // QCOW_MAX_REFTABLE_SIZE
	qcowMaxSnapshots     = 65536
	qcowMaxSnapshotExtra = 1024
	qcowMaxSnapshotBytes = 64 << 20 // QCOW_MAX_SNAPSHOTS_SIZE
	qcowMaxBackingName   = 1023
	qcowMaxHostOffset    = 1 << 56 // bits 9-55 of an offset
)

// Incompatible feature bits.
const (
	qcowIncompatDirty       = 1 << 0
	qcowIncompatCorrupt     = 1 << 1
	qcowIncompatDataFile    = 1 << 2
	qcowIncompatCompression = 1 << 3
	qcowIncompatExtendedL2  = 1 << 4
)

// Autoclear feature bits.
const qcowAutoclearDataFileRaw = 1 << 1

// Header extension types.
const (
	qcowExtEnd           = 0x00000000
	qcowExtBackingFormat = 0xe2792aca
	qcowExtFeatureTable  = 0x6803f857
	qcowExtCrypto        = 0x0537be77
	qcowExtDataFile      = 0x44415441
)

// qcowHeader is a checked qcow2 header.
type qcowHeader struct {
	version     int
	clusterBits uint32
	clusterSize int64
	size        int64 // virtual size
	l1Size      int64 // entries
	l1Offset    int64
	incompat    uint64
	extendedL2  bool
	compression string // "zlib" or "zstd"
	backing     string // "" when there is none
	// backingFormat is the backing file format header extension ("" when
	// absent: the format is probed).
	backingFormat string
}

// qcowCorrupt returns an ErrCorrupt error about the qcow2 image name.
func qcowCorrupt(name, format string, args ...any) error {
	return &formatError{kind: ErrCorrupt, msg: fmt.Sprintf("%s: corrupt qcow2 image: %s (qemu-img check %s tells more)",
		name, fmt.Sprintf(format, args...), filepath.Base(name))}
}

// qcowUnsupported returns an ErrUnsupported error about the qcow2 image name.
func qcowUnsupported(name, format string, args ...any) error {
	return &formatError{kind: ErrUnsupported, msg: fmt.Sprintf("%s: %s", name, fmt.Sprintf(format, args...))}
}

// convertHint is the command that turns an image bty cannot read into
// one it can.
func convertHint(name string) string {
	base := filepath.Base(name)
	return fmt.Sprintf("qemu-img convert -O qcow2 %s %s", base, strings.TrimSuffix(base, filepath.Ext(base))+"-plain.qcow2")
}

// readQcowHeader reads and checks the header of the qcow2 image in ra,
// fileSize bytes long (-1 when unknown), with its header extensions and
// the tables it locates (L1, refcount and snapshot tables: offsets,
// sizes, bounds).
func readQcowHeader(ra io.ReaderAt, fileSize int64, name string) (*qcowHeader, error) {
	corrupt := func(format string, args ...any) error { return qcowCorrupt(name, format, args...) }
	var b [112]byte
	n, err := ra.ReadAt(b[:], 0)
	if err != nil && !errors.Is(err, io.EOF) && n < len(b) {
		return nil, fmt.Errorf("%s: reading the qcow2 header: %w", name, err)
	}
	if n < 72 || !bytes.Equal(b[:4], []byte("QFI\xfb")) {
		return nil, corrupt("the header is cut short (%d bytes, at least 72 needed)", n)
	}
	be := binary.BigEndian
	h := &qcowHeader{
		version:     int(be.Uint32(b[4:])),
		clusterBits: be.Uint32(b[20:]),
		compression: "zlib",
	}
	switch h.version {
	case 2, 3:
	case 1:
		return nil, qcowUnsupported(name, "this is a qcow version 1 image, which bty does not read: convert it with %s", convertHint(name))
	default:
		return nil, qcowUnsupported(name, "qcow2 version %d is not supported (only 2 and 3): convert it with %s", h.version, convertHint(name))
	}
	if h.clusterBits < qcowMinClusterBits || h.clusterBits > qcowMaxClusterBits {
		return nil, corrupt("cluster_bits is %d (header offset 20), outside %d..%d", h.clusterBits, qcowMinClusterBits, qcowMaxClusterBits)
	}
	cs := int64(1) << h.clusterBits
	h.clusterSize = cs
	rawSize := be.Uint64(b[24:])
	if rawSize > 1<<62 {
		return nil, corrupt("virtual size %d (header offset 24) is impossibly large", rawSize)
	}
	h.size = int64(rawSize)
	if h.size%512 != 0 {
		// qemu counts a disk in 512-byte sectors and drops the rest:
		// flashing all of it would give other bytes than qemu-img.
		return nil, qcowUnsupported(name, "the qcow2 virtual size %d (header offset 24) is not a whole number of 512-byte sectors, "+
			"so qemu reads only its first %d bytes: convert it with %s to flash what qemu sees", h.size, h.size&^511, convertHint(name))
	}
	switch crypt := be.Uint32(b[32:]); crypt {
	case 0:
	case 1, 2:
		method := map[uint32]string{1: "AES", 2: "LUKS"}[crypt]
		return nil, qcowUnsupported(name, "encrypted qcow2 (%s) is not supported: decrypt it first, e.g. qemu-img convert --object secret,id=s0,file=KEYFILE "+
			"--image-opts driver=qcow2,file.filename=%s,encrypt.key-secret=s0 -O qcow2 plain.qcow2", method, filepath.Base(name))
	default:
		return nil, corrupt("unknown encryption method %d (crypt_method, header offset 32; 0 none, 1 AES, 2 LUKS)", crypt)
	}

	refcountOrder, headerLength := uint32(4), uint32(72)
	var autoclear uint64 // compatible features (lazy refcounts) do not change reading
	if h.version == 3 {
		if n < 104 {
			return nil, corrupt("the version 3 header is cut short (%d bytes, at least 104 needed)", n)
		}
		h.incompat = be.Uint64(b[72:])
		autoclear = be.Uint64(b[88:])
		refcountOrder = be.Uint32(b[96:])
		headerLength = be.Uint32(b[100:])
		switch {
		case headerLength < 104:
			return nil, corrupt("header_length %d (header offset 100) is below the 104 bytes of a version 3 header", headerLength)
		case headerLength%8 != 0:
			return nil, corrupt("header_length %d (header offset 100) is not a multiple of 8", headerLength)
		case int64(headerLength) > cs:
			return nil, corrupt("header_length %d (header offset 100) exceeds the %d-byte cluster", headerLength, cs)
		}
		if refcountOrder > 6 {
			return nil, corrupt("refcount_order %d (header offset 96) exceeds 6 (64-bit refcounts)", refcountOrder)
		}
	}

	// The first cluster holds the header, its extensions and the backing
	// file name.
	first := cs
	if fileSize >= 0 {
		first = min(first, fileSize)
	}
	head := make([]byte, first)
	if n, err := ra.ReadAt(head, 0); n < int(first) && err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: reading the qcow2 header: %w", name, err)
	} else {
		head = head[:n]
	}
	if int64(len(head)) < int64(headerLength) {
		return nil, corrupt("the file ends at %d bytes, inside its %d-byte header", len(head), headerLength)
	}

	if h.version == 3 && headerLength > 104 {
		h.compression = map[byte]string{0: "zlib", 1: "zstd"}[head[104]]
		if h.compression == "" {
			return nil, qcowUnsupported(name, "qcow2 compression type %d is not supported (only zlib and zstd): convert it with %s", head[104], convertHint(name))
		}
	}
	if h.incompat&qcowIncompatCompression != 0 && h.compression == "zlib" {
		return nil, corrupt("the compression type feature bit is set but compression_type (header offset 104) is zlib")
	}
	if h.incompat&qcowIncompatCompression == 0 && h.compression != "zlib" {
		return nil, corrupt("compression_type (header offset 104) is %s but the compression type feature bit is not set", h.compression)
	}

	// Backing file name: within the first cluster, at most 1023 bytes.
	var backingOff int64
	if off, size := be.Uint64(b[8:]), be.Uint32(b[16:]); off != 0 {
		if off > uint64(cs) || int64(off) < int64(headerLength) {
			return nil, corrupt("backing_file_offset %d (header offset 8) is outside the first cluster's free space (%d..%d)", off, headerLength, cs)
		}
		if size > qcowMaxBackingName || int64(off)+int64(size) > cs {
			return nil, corrupt("the backing file name of %d bytes at offset %d does not fit (at most %d bytes, within the first cluster)", size, off, qcowMaxBackingName)
		}
		if int64(off)+int64(size) > int64(len(head)) {
			return nil, corrupt("the backing file name at offset %d runs past the end of the file", off)
		}
		backingOff = int64(off)
		h.backing = string(head[off : off+uint64(size)])
	}

	features, err := readQcowExtensions(head, int64(headerLength), backingOff, h, name)
	if err != nil {
		return nil, err
	}

	// Incompatible features: an unknown bit must stop every reader.
	for bit := range 64 {
		mask := uint64(1) << bit
		if h.incompat&mask == 0 {
			continue
		}
		switch mask {
		case qcowIncompatDirty:
			// Refcounts may be stale; the mapping is fine for reading.
		case qcowIncompatCorrupt:
			return nil, qcowCorrupt(name, "qemu marked the image corrupt (incompatible feature bit 1); repair it with qemu-img check -r all %s", filepath.Base(name))
		case qcowIncompatDataFile:
			return nil, qcowUnsupported(name, "qcow2 with an external data file is not supported (the data is not in this file): convert it with %s", convertHint(name))
		case qcowIncompatCompression:
		case qcowIncompatExtendedL2:
			if h.clusterBits < 14 {
				return nil, corrupt("extended L2 entries with %d-byte clusters (at least 16 KiB needed)", cs)
			}
			h.extendedL2 = true
		default:
			what := fmt.Sprintf("incompatible feature bit %d", bit)
			if fn := features[[2]int{0, bit}]; fn != "" {
				what = fmt.Sprintf("%s (incompatible feature bit %d)", fn, bit)
			}
			return nil, qcowUnsupported(name, "the qcow2 image uses %s, which bty does not know: convert it with %s", what, convertHint(name))
		}
	}
	if autoclear&qcowAutoclearDataFileRaw != 0 && h.incompat&qcowIncompatDataFile == 0 {
		return nil, corrupt("the raw external data autoclear bit is set without an external data file")
	}

	// The active L1 table.
	l2Entries := cs / 8
	if h.extendedL2 {
		l2Entries = cs / 16
	}
	l1Size := int64(be.Uint32(b[36:]))
	l1Offset := be.Uint64(b[40:])
	if l1Size > qcowMaxL1Bytes/8 {
		return nil, corrupt("the active L1 table has %d entries (l1_size, header offset 36), more than qemu's limit of %d", l1Size, qcowMaxL1Bytes/8)
	}
	need := ceilDiv(h.size, cs*l2Entries)
	if l1Size < need {
		return nil, corrupt("the L1 table has %d entries (l1_size, header offset 36) but a %d-byte disk needs %d", l1Size, h.size, need)
	}
	if err := checkQcowTable(l1Offset, l1Size*8, cs, fileSize); err != "" {
		return nil, corrupt("the L1 table (l1_table_offset %d, header offset 40; %d entries) %s", l1Offset, l1Size, err)
	}
	h.l1Size, h.l1Offset = l1Size, int64(l1Offset)

	// The refcount table: bty does not read refcounts, but a header
	// without a sane one is corrupt for qemu too.
	rtOffset, rtClusters := be.Uint64(b[48:]), int64(be.Uint32(b[56:]))
	if rtClusters == 0 {
		return nil, corrupt("the image has no refcount table (refcount_table_clusters is 0, header offset 56)")
	}
	if rtClusters > qcowMaxRefTableBytes/cs {
		return nil, corrupt("the refcount table has %d clusters (header offset 56), more than qemu's limit of %d bytes", rtClusters, qcowMaxRefTableBytes)
	}
	if err := checkQcowTable(rtOffset, rtClusters*cs, cs, fileSize); err != "" {
		return nil, corrupt("the refcount table (refcount_table_offset %d, header offset 48) %s", rtOffset, err)
	}

	// The snapshot table: its entries' L1 tables must be sane too.
	nbSnapshots, snapOffset := int64(be.Uint32(b[60:])), be.Uint64(b[64:])
	if nbSnapshots > qcowMaxSnapshots {
		return nil, corrupt("%d snapshots (nb_snapshots, header offset 60), more than qemu's limit of %d", nbSnapshots, qcowMaxSnapshots)
	}
	if err := checkQcowSnapshots(ra, snapOffset, nbSnapshots, h, fileSize, name); err != nil {
		return nil, err
	}
	return h, nil
}

// readQcowExtensions walks the header extensions between the header's end
// and the backing file name (or the end of the first cluster) and fills
// h.backingFormat. It returns the feature name table.
func readQcowExtensions(head []byte, start, backingOff int64, h *qcowHeader, name string) (map[[2]int]string, error) {
	corrupt := func(format string, args ...any) error { return qcowCorrupt(name, format, args...) }
	end := h.clusterSize
	if backingOff != 0 {
		end = backingOff
	}
	if end > int64(len(head)) {
		end = int64(len(head))
	}
	features := map[[2]int]string{}
	seen := map[uint32]bool{}
	be := binary.BigEndian
	for off := start; off < end; {
		if end-off < 8 {
			return nil, corrupt("a header extension at offset %d is cut short by the end of the extension area (%d)", off, end)
		}
		typ, length := be.Uint32(head[off:]), int64(be.Uint32(head[off+4:]))
		off += 8
		if length > end-off {
			return nil, corrupt("the header extension 0x%08x at offset %d is %d bytes long, past the end of the extension area (%d)", typ, off-8, length, end)
		}
		data := head[off : off+length]
		if seen[typ] && (typ == qcowExtBackingFormat || typ == qcowExtDataFile) {
			return nil, corrupt("the header extension 0x%08x appears twice (again at offset %d)", typ, off-8)
		}
		seen[typ] = true
		switch typ {
		case qcowExtEnd:
			return features, nil
		case qcowExtBackingFormat:
			if length >= 16 {
				return nil, corrupt("the backing file format name at offset %d is %d bytes long (at most 15)", off, length)
			}
			h.backingFormat = string(data)
		case qcowExtFeatureTable:
			for i := int64(0); i+48 <= length; i += 48 {
				features[[2]int{int(data[i]), int(data[i+1])}] = string(bytes.TrimRight(data[i+2:i+48], "\x00"))
			}
		case qcowExtCrypto:
			return nil, corrupt("a full disk encryption header extension (offset %d) in an image without LUKS encryption", off-8)
		case qcowExtDataFile:
			// Only meaningful with the external data file bit, which is
			// refused with its own message.
		}
		off += (length + 7) &^ 7
	}
	return features, nil
}

// checkQcowTable checks a table's offset (cluster-aligned, as qemu
// requires even of an empty table; past the header) and that its size
// bytes lie inside the file. It returns what is wrong, or "".
func checkQcowTable(off uint64, size, cs, fileSize int64) string {
	switch {
	case off%uint64(cs) != 0:
		return fmt.Sprintf("is not aligned to the %d-byte cluster size", cs)
	case off >= qcowMaxHostOffset:
		return "lies beyond the largest offset qcow2 can address"
	case size == 0:
	case off == 0:
		return "overlaps the header"
	case fileSize >= 0 && int64(off)+size > fileSize:
		return fmt.Sprintf("ends at %d, past the end of the %d-byte file", int64(off)+size, fileSize)
	}
	return ""
}

// checkQcowSnapshots checks the snapshot table: its bounds and each
// entry's L1 table (offset, size), extra data and name lengths.
func checkQcowSnapshots(ra io.ReaderAt, off uint64, count int64, h *qcowHeader, fileSize int64, name string) error {
	corrupt := func(format string, args ...any) error { return qcowCorrupt(name, format, args...) }
	cs := h.clusterSize
	if err := checkQcowTable(off, count*40, cs, fileSize); err != "" {
		return corrupt("the snapshot table (snapshots_offset %d, header offset 64; %d snapshots) %s", off, count, err)
	}
	if count == 0 {
		return nil
	}
	// Read the table in one piece, bounded by qemu's limit and the file.
	limit := int64(qcowMaxSnapshotBytes)
	if fileSize >= 0 {
		limit = min(limit, fileSize-int64(off))
	}
	buf := make([]byte, min(limit, count*(40+qcowMaxSnapshotExtra+2*65535+7)))
	n, err := ra.ReadAt(buf, int64(off))
	if n < len(buf) && err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%s: reading the qcow2 snapshot table: %w", name, err)
	}
	buf = buf[:n]
	be := binary.BigEndian
	p := int64(0)
	for i := range count {
		at := int64(off) + p
		if p+40 > int64(len(buf)) {
			return corrupt("snapshot %d's entry at offset %d runs past the end of the file or qemu's %d-byte snapshot table limit", i, at, qcowMaxSnapshotBytes)
		}
		e := buf[p:]
		l1Off, l1Size := be.Uint64(e[0:]), int64(be.Uint32(e[8:]))
		idLen, nameLen := int64(be.Uint16(e[12:])), int64(be.Uint16(e[14:]))
		extra := int64(be.Uint32(e[36:]))
		if extra > qcowMaxSnapshotExtra {
			return corrupt("snapshot %d (entry at offset %d) has %d bytes of extra data, more than %d", i, at, extra, qcowMaxSnapshotExtra)
		}
		if l1Size > qcowMaxL1Bytes/8 {
			return corrupt("snapshot %d (entry at offset %d) has an L1 table of %d entries, more than qemu's limit", i, at, l1Size)
		}
		if l1Size > 0 {
			if err := checkQcowTable(l1Off, l1Size*8, cs, fileSize); err != "" {
				return corrupt("snapshot %d's L1 table (offset %d, entry at offset %d) %s", i, l1Off, at, err)
			}
		}
		size := (40 + extra + idLen + nameLen + 7) &^ 7
		if p+size > int64(len(buf)) {
			return corrupt("snapshot %d's entry at offset %d runs past the end of the file or qemu's %d-byte snapshot table limit", i, at, qcowMaxSnapshotBytes)
		}
		p += size
	}
	return nil
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }
