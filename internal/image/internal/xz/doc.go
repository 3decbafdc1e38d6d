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
// public domain (see LICENSE), copied into bty with one change:
// dictRepeat (dec_lzma2.go) copies a match with copy() instead of a
// byte loop, doubling the copied span for overlapping matches. Disk
// images are mostly long runs of zeros, which LZMA2 codes as
// 273-byte distance-0 matches; the byte loop took a quarter of the
// decode time on bty's 3 GiB Debian bench image, the copy saves ~15 %
// of the CPU time (see internal/image/realbench_test.go). No other Go
// xz decoder is as fast: ulikunitz/xz decoded the same image ~30 %
// slower than unpatched xi2/xz.
package xz
