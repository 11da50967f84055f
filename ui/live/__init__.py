"""Live view widgets: the tag browser and the pyqtgraph charts."""
