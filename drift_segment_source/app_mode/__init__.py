"""App mode, for many Drift orgs: the install flow (``oauth``), the setup form
(``write_key``), org records with encrypted secrets (``orgs``, ``secrets_box``)."""
