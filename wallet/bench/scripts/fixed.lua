-- One request, the same every time: method and path come from the URL / options, built once.
-- Options: method=POST|GET, body=<JSON text> (none for a GET).
require("common")

function configure(opts)
  wrk.method = opts.method or "GET"
  if opts.body then
    wrk.body = opts.body
    wrk.headers["Content-Type"] = "application/json"
  end
end
