-- A request to a wallet chosen uniformly at random: path = prefix .. k .. suffix, k in 0..n-1.
-- Options: method=POST|GET, prefix=/v1/wallet/s-<runid>-, suffix=/deposit or empty, n=<wallets>,
-- body=<JSON text> (none for a GET).
require("common")

local method, prefix, suffix, n, body, headers = "GET", "/", "", 1, nil, {}

function configure(opts)
  method = opts.method or method
  prefix = opts.prefix or prefix
  suffix = opts.suffix or suffix
  n = tonumber(opts.n or "1")
  body = opts.body
  if body then headers["Content-Type"] = "application/json" end
  headers["Authorization"] = wrk.headers["Authorization"]
end

function request()
  return wrk.format(method, prefix .. math.random(0, n - 1) .. suffix, with_key(headers), body)
end
