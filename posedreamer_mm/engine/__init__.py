"""OpenMMLab ``engine``: hooks, samplers, loops and optimizer constructors (tool helpers live in ``apis``)."""
