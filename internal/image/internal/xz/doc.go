// Package xz implements XZ decompression natively in Go.
//
// # Usage
//
// For ease of use, this package is designed to have a similar API to
// compress/gzip. See the examples for further details.
//
// # Implementation
//
// This package is a translation from C to Go of XZ Embedded
// (http://tukaani.org/xz/embedded.html) with enhancements made so as
// to implement all mandatory and optional parts of the XZ file format
// specification v1.0.4. It supports all filters and block check
// types, supports multiple streams, and performs index verification
// using SHA-256 as recommended by the specification.
//
// # Speed
//
// On the author's Intel Ivybridge i5, decompression speed is about
// half that of the standard XZ Utils (tested with a recent linux
// kernel tarball).
//
// # Thanks
//
// Thanks are due to Lasse Collin and Igor Pavlov, the authors of XZ
// Embedded, on whose code package xz is based. It would not exist
// without their decision to allow others to modify and reuse their
// code.
//
// # Bug reports
//
// For bug reports relating to this package please contact the author
// through https://github.com/xi2/xz/issues, and not the authors of XZ
// Embedded.
//
// # Fork
//
// This is github.com/xi2/xz at 48954b6210f8 (2017, unmaintained since),
// public domain (see LICENSE), copied into bty with these changes:
//
//   - Speed: dictRepeat (dec_lzma2.go) copies a match with copy() instead
//     of a byte loop, doubling the copied span for overlapping matches.
//     Disk images are mostly long runs of zeros, which LZMA2 codes as
//     273-byte distance-0 matches; the byte loop took a quarter of the
//     decode time on bty's 3 GiB Debian bench image, the copy saves
//     ~15 % of the CPU time (see internal/image/realbench_test.go). No
//     other Go xz decoder is as fast: ulikunitz/xz decoded the same image
//     ~30 % slower than unpatched xi2/xz.
//   - Speed: the literal decoder's two inner loops (rcBittree and the
//     matched-literal loop in dec_lzma2.go) run the range coder with its
//     state in locals, since rcBit does not inline.
//   - The ARM64 BCJ filter of xz 5.4 (filter ID 0x0A, bcjARM64Filter in
//     dec_bcj.go).
//   - A block using a filter this package does not decode fails with a
//     FilterError that names the filter (RISC-V BCJ of xz 5.6, or an
//     unknown ID); it still matches ErrOptions.
//   - An LZMA chunk whose range coder's first byte is not 0 is ErrData,
//     as in xz-utils (rcReadInit; upstream ignored that byte).
//
// Beyond that: doc headings in gofmt's form, bare returns staticcheck
// flags removed, more tests (reader_test.go, the new dictrepeat_test.go)
// and no example_test.go.
package xz
