-- A transfer between two distinct wallets chosen uniformly at random among n:
-- POST <prefix><a>/transfer {"toWalletId": "<name><b>", "amount": <amount>}.
-- Options: prefix=/v1/wallet/, name=t-<runid>-, n=<wallets>, amount=0.01.
require("common")

local prefix, name, n, amount = "/v1/wallet/", "t-", 2, "0.01"
local headers = { ["Content-Type"] = "application/json" }

function configure(opts)
  prefix = opts.prefix or prefix
  name = opts.name or name
  n = tonumber(opts.n or "2")
  amount = opts.amount or amount
  headers["Authorization"] = wrk.headers["Authorization"]
end

function request()
  local a = math.random(0, n - 1)
  local b = math.random(0, n - 2)
  if b >= a then b = b + 1 end
  local body = '{"toWalletId":"' .. name .. b .. '","amount":' .. amount .. '}'
  return wrk.format("POST", prefix .. name .. a .. "/transfer", with_key(headers), body)
end
