//go:build !linux

package tui

import "errors"

func reboot() error { return errors.New("reboot is only supported on Linux") }
