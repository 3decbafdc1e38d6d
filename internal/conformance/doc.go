// Package conformance holds bty's decoder conformance test
// (conformance_test.go): third-party test files and images made with
// every option of the reference tools, each flashed with the real engine
// onto a loop device full of random bytes and compared with what the
// reference decoder (xz, libzstd, gzip, bzip2, qemu-img) makes of it.
// Where the reference refuses a file, bty must refuse it too. It needs
// root, loop devices and the reference tools; make test runs it.
package conformance
