"""The Gradio Space's library; app.py wires it to the page. No paper equation is implemented here: these modules
serve the traversals of `pdetraversal.potentials` (paper eq. 2) on a public page.

    public.py      what a public page serves (the allow-list), accepts (a request's limits) and shows (error texts
                   without this server's paths)
    models.py      loading (potentials, generator) pairs, the caches of models and answers, the model picker
    comparison.py  the /compare view: every method for the loaded generator, and its table
    frames.py      decoding within a time budget per picture
    render.py      the matplotlib figures, drawn in a pool of spawned processes
    handlers.py    a request's input checks and the /traverse, /overview and /compare answers

None of them imports gradio: a refused request raises `public.RequestError`, which app.py shows as gr.Error. The
package is not part of `pdetraversal`'s public API.
"""
