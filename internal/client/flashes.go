package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/fleet"
)

// Reflash asks for a one-shot reflash of the machine (POST
// /machines/{mac}/reflash) with req's overrides. A flash in progress is
// a 409 *APIError naming it.
func (c *Client) Reflash(ctx context.Context, mac fleet.MAC, req fleet.ReflashRequest) (api.ReflashResult, error) {
	var out api.ReflashResult
	_, err := c.do(ctx, request{method: http.MethodPost, url: c.endpoint("machines", mac.String(), "reflash"), body: req, auth: true}, &out)
	return out, err
}

// Flashes returns a page of the machine's flash history, newest first.
func (c *Client) Flashes(ctx context.Context, mac fleet.MAC, limit, offset int) (api.FlashPage, error) {
	var out api.FlashPage
	u := c.endpoint("machines", mac.String(), "flashes") + "?limit=" + strconv.Itoa(limit) + "&offset=" + strconv.Itoa(offset)
	_, err := c.do(ctx, request{method: http.MethodGet, url: u, auth: true}, &out)
	return out, err
}

// Flash returns one flash of the machine.
func (c *Client) Flash(ctx context.Context, mac fleet.MAC, id int64) (fleet.Flash, error) {
	var out fleet.Flash
	_, err := c.do(ctx, request{method: http.MethodGet, url: c.endpoint("machines", mac.String(), "flashes", strconv.FormatInt(id, 10)), auth: true}, &out)
	return out, err
}

// CancelFlash cancels a flash in progress; one that already ended is a
// 409 *APIError.
func (c *Client) CancelFlash(ctx context.Context, mac fleet.MAC, id int64) (fleet.Flash, error) {
	var out fleet.Flash
	_, err := c.do(ctx, request{method: http.MethodPost, url: c.endpoint("machines", mac.String(), "flashes", strconv.FormatInt(id, 10), "cancel"), auth: true}, &out)
	return out, err
}

// ErrStopWatching is what a WatchMachine callback returns to end the
// watch; WatchMachine then returns nil.
var ErrStopWatching = errors.New("stop watching")

// maxEventBytes bounds one event on the stream (a machine record with
// its seed is at most a few MiB).
const maxEventBytes = 8 << 20

// WatchMachine follows one machine's record on the server's event
// stream (GET /events/machines?mac=MAC): fn gets its current record on
// connect and every change after, until fn returns an error
// (ErrStopWatching: WatchMachine returns nil) or ctx ends. A dropped
// stream is reconnected (the record is sent again on connect, so no
// change is missed), with a pause growing to 10 s; a refused one (not
// logged in, unknown machine) ends the watch with the server's error.
func (c *Client) WatchMachine(ctx context.Context, mac fleet.MAC, fn func(api.Machine) error) error {
	u := c.endpoint("events", "machines") + "?snapshot=0&mac=" + mac.String()
	return c.watch(ctx, u, ErrStopWatching, func(body io.Reader) error { return readEvents(body, fn) })
}

// watch follows the event stream at u: read gets each connection's
// body. A read that returns stop ends the watch with nil, another error
// ends it with that error; a dropped stream is reconnected with a pause
// growing to 10 s, a refused one ends the watch with the server's
// error.
func (c *Client) watch(ctx context.Context, u string, stop error, read func(io.Reader) error) error {
	pause := 500 * time.Millisecond
	for {
		var readErr error
		_, err := c.do(ctx, request{method: http.MethodGet, url: u, auth: true, header: http.Header{"Accept": {"text/event-stream"}},
			stream: func(body io.Reader) error {
				pause = 500 * time.Millisecond
				readErr = read(body)
				return readErr
			}}, nil)
		switch {
		case errors.Is(readErr, stop):
			return nil
		case readErr != nil:
			return readErr
		case ctx.Err() != nil:
			return ctx.Err()
		case StatusCode(err) != 0:
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
		pause = min(2*pause, 10*time.Second)
	}
}

// readEvents reads "machine" events from an event stream and hands each
// upsert's record to fn, until fn fails or the stream ends (nil).
func readEvents(body io.Reader, fn func(api.Machine) error) error {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), maxEventBytes)
	var event, data string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if event == "machine" && data != "" {
				var ev api.MachineEvent
				if err := json.Unmarshal([]byte(data), &ev); err != nil {
					return fmt.Errorf("the server sent an event bty-ctl cannot read: %w", err)
				}
				if ev.Type == "upsert" && ev.Machine != nil {
					if err := fn(*ev.Machine); err != nil {
						return err
					}
				}
			}
			event, data = "", ""
		case strings.HasPrefix(line, "event:"):
			event = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:"):
			data += strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " ")
		}
	}
	return nil
}
