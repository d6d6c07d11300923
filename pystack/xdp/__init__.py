"""pystack.xdp"""
