"""`acechat demo`: the console on a built-in local stand-in of the AI Chat API, so acechat can be tried
with no token, no network and no checkout of the tests."""
