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

	"github.com/btyproject/bty/internal/api"
)

// Rollouts of a new image (docs/reference.md, "Rollouts").

// StartRollout starts a rollout (POST /rollouts). An empty selection or
// an image not in the catalog is a 400 *APIError, a machine already in
// a running rollout a 409.
func (c *Client) StartRollout(ctx context.Context, req api.RolloutRequest) (api.Rollout, error) {
	var out api.Rollout
	_, err := c.do(ctx, request{method: http.MethodPost, url: c.endpoint("rollouts"), body: req, auth: true}, &out)
	return out, err
}

// Rollouts lists the newest rollouts first, at most limit.
func (c *Client) Rollouts(ctx context.Context, limit int) ([]api.Rollout, error) {
	var out []api.Rollout
	_, err := c.do(ctx, request{method: http.MethodGet, url: c.endpoint("rollouts") + "?limit=" + strconv.Itoa(limit), auth: true}, &out)
	if out == nil && err == nil {
		out = []api.Rollout{}
	}
	return out, err
}

// Rollout returns one rollout; an unknown id is a 404 *APIError.
func (c *Client) Rollout(ctx context.Context, id int64) (api.Rollout, error) {
	var out api.Rollout
	_, err := c.do(ctx, request{method: http.MethodGet, url: c.endpoint("rollouts", strconv.FormatInt(id, 10)), auth: true}, &out)
	return out, err
}

// RolloutAction pauses, resumes or aborts a rollout (action "pause",
// "resume", "abort"); one in the wrong state is a 409 *APIError.
func (c *Client) RolloutAction(ctx context.Context, id int64, action string) (api.Rollout, error) {
	var out api.Rollout
	_, err := c.do(ctx, request{method: http.MethodPost, url: c.endpoint("rollouts", strconv.FormatInt(id, 10), action), auth: true}, &out)
	return out, err
}

// WatchRollout follows a rollout on its event stream (GET
// /rollouts/{id}/events): fn gets the rollout on connect and on every
// change, until the stream's "end" event (fn is called with it, then
// WatchRollout returns nil), fn fails, or ctx ends. A dropped stream is
// reconnected with a pause growing to 10 s; a refused one ends the watch
// with the server's error.
func (c *Client) WatchRollout(ctx context.Context, id int64, fn func(api.Rollout) error) error {
	errEnd := errors.New("end")
	return c.watch(ctx, c.endpoint("rollouts", strconv.FormatInt(id, 10), "events"), errEnd,
		func(body io.Reader) error { return readRolloutEvents(body, fn, errEnd) })
}

// readRolloutEvents hands each "rollout" and "end" event's rollout to
// fn; after "end" it returns errEnd.
func readRolloutEvents(body io.Reader, fn func(api.Rollout) error, errEnd error) error {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), maxEventBytes)
	var event, data string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if (event == "rollout" || event == "end") && data != "" {
				var r api.Rollout
				if err := json.Unmarshal([]byte(data), &r); err != nil {
					return fmt.Errorf("the server sent an event bty-ctl cannot read: %w", err)
				}
				if err := fn(r); err != nil {
					return err
				}
				if event == "end" {
					return errEnd
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
