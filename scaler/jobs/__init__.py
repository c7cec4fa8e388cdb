"""The Redis job contract: keys, claims and their Lua, the leader lease, messages, the promoter."""
