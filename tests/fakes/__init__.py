"""Local fakes of the services acechat talks to."""
