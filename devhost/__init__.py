"""A small local host for the real `function_app.app`: Azure's route-template rules and
routePrefix over uvicorn. Azure Functions Core Tools cannot be installed on these machines;
this is a development server for the app, not a second implementation of the API."""
