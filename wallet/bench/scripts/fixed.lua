-- One request, the same every time but for its X-Request-ID (when keyed): method and path come
-- from the URL / options. Options: method=POST|GET, body=<JSON text> (none for a GET).
require("common")

local method, body, headers = "GET", nil, {}

function configure(opts)
  method = opts.method or method
  if opts.body then
    body = opts.body
    headers["Content-Type"] = "application/json"
  end
  headers["Authorization"] = wrk.headers["Authorization"]
end

function request()
  return wrk.format(method, nil, with_key(headers), body)
end
