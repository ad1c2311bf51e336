"""What training code imports: init(), Run and its contexts, save policies."""
