"""The built-in local stand-in of the AI Chat API, so acechat can be tried with no token, no network and no
checkout of the tests: `acechat demo` (bots/console_demo.py) runs the console on it. It imports nothing
of the bots: the dependency goes one way, bots to demo."""
