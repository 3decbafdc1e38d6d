package imagetest

import (
	"encoding/binary"
	"fmt"
)

// zstdBlockSizes checks that no block of the zstd frames in b (which
// libzstd decoded) is larger than its frame allows: min(window, 128 KiB)
// of content (RFC 8878, 3.1.1.2). It only walks headers.
func zstdBlockSizes(b []byte) error {
	for p := 0; p+8 <= len(b); {
		magic := binary.LittleEndian.Uint32(b[p:])
		if magic&0xfffffff0 == 0x184d2a50 {
			p += 8 + int(binary.LittleEndian.Uint32(b[p+4:]))
			continue
		}
		fhd := b[p+4]
		single := fhd&0x20 != 0
		h := p + 5
		var window uint64
		if !single {
			wd := b[h]
			base := uint64(1) << (10 + wd>>3)
			window = base + base/8*uint64(wd&7)
			h++
		}
		h += []int{0, 1, 2, 4}[fhd&3]
		fcsLen := []int{0, 2, 4, 8}[fhd>>6]
		if fhd>>6 == 0 && single {
			fcsLen = 1
		}
		if single {
			var fcs uint64
			for i := range fcsLen {
				fcs |= uint64(b[h+i]) << (8 * i)
			}
			if fcsLen == 2 {
				fcs += 256
			}
			window = fcs
		}
		h += fcsLen
		limit := min(window, 128<<10)
		for {
			if h+3 > len(b) {
				return nil
			}
			v := uint32(b[h]) | uint32(b[h+1])<<8 | uint32(b[h+2])<<16
			last, typ, size := v&1 != 0, (v>>1)&3, uint64(v>>3)
			if size > limit {
				return fmt.Errorf("block at offset %d: %d bytes, more than its frame's maximum of %d", h, size, limit)
			}
			h += 3
			if typ == 1 {
				h++
			} else {
				h += int(size)
			}
			if last {
				break
			}
		}
		if fhd&4 != 0 {
			h += 4
		}
		p = h
	}
	return nil
}
