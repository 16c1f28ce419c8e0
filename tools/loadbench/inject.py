"""loadbench's mitmproxy addon: inject the bearer token into every request.

It is the competitor's equivalent of onbehalf's injection, without identity,
policy or audit. The token comes from the environment, never the command line.
"""
import os

TOKEN = "Bearer " + os.environ["LOADBENCH_TOKEN"]


class Inject:
    def request(self, flow):
        flow.request.headers["Authorization"] = TOKEN


addons = [Inject()]
